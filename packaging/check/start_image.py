"""The seed's Python program (tests/sdk/image.py) through rethread started from the installed
wheel with rethread_proxy.start(). Usage: start_image.py FAKE_URL IMAGE_PY"""

import os
import subprocess
import sys

import rethread_proxy

fake, program = sys.argv[1], sys.argv[2]
with rethread_proxy.start(upstream=fake, fallback_retries=0) as proxy:
    env = dict(os.environ, OPENAI_BASE_URL=proxy.base_url, OPENAI_API_KEY="sk-package-check")
    code = subprocess.call([sys.executable, program], env=env)
sys.exit(code)
