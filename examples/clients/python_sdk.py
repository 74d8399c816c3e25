"""The failing program of the issue, with the official Python SDK (`pip install openai`).

An image turn on gpt-5, then a follow-up that hands back only the image_generation_call by id.
Straight to the API the follow-up fails with

    400 Item 'ig_…' of type 'image_generation_call' was provided without its required
    'reasoning' item: 'rs_…'.

Through rethread it succeeds, unchanged: rethread inserts the reasoning item (and the rest of
the turn) before forwarding it.

    OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_API_KEY=sk-… python python_sdk.py

OPENAI_BASE_URL defaults to http://127.0.0.1:8080/v1 (rethread on its default address).
"""

import os
import sys

from openai import OpenAI

MODEL = os.environ.get("MODEL", "gpt-5")
TOOLS = [{"type": "image_generation"}]


def main() -> int:
    client = OpenAI(base_url=os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1"))

    response = client.responses.create(
        model=MODEL,
        input="Generate an image of gray tabby cat hugging an otter with an orange scarf",
        tools=TOOLS,
    )
    print("first turn:", ", ".join(item.type for item in response.output))
    image_calls = [item for item in response.output if item.type == "image_generation_call"]
    if not image_calls:
        print("no image_generation_call in the first turn", file=sys.stderr)
        return 1

    # The follow-up of the issue: the new user message and the image call by id, nothing else.
    raw = client.responses.with_raw_response.create(
        model=MODEL,
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "Now make it look realistic"}]},
            {"type": "image_generation_call", "id": image_calls[0].id},
        ],
        tools=TOOLS,
    )
    followup = raw.parse()
    print("follow-up:", ", ".join(item.type for item in followup.output))
    print("x-rethread-inserted:", raw.headers.get("x-rethread-inserted", "(none: not through rethread?)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
