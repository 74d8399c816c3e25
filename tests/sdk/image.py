"""The issue's program with the Python SDK: an image turn on gpt-5, then a follow-up that hands
back only the image_generation_call by id. Fails against the API without rethread (the reasoning
item is missing); succeeds through rethread.

Base URL from OPENAI_BASE_URL, key from OPENAI_API_KEY (the SDK's defaults).
Usage: python image.py [--async] [--no-store]
(--no-store: both calls with store=False, as under Zero Data Retention; the API then cannot look
the image call up by id.)
"""

import asyncio
import sys

from openai import AsyncOpenAI, OpenAI

PROMPT = "Generate an image of gray tabby cat hugging an otter with an orange scarf"
TOOLS = [{"type": "image_generation"}]
STORE = {"store": False} if "--no-store" in sys.argv[1:] else {}


def followup_input(ig_id):
    return [
        {"role": "user", "content": [{"type": "input_text", "text": "Now make it look realistic"}]},
        {"type": "image_generation_call", "id": ig_id},
    ]


def image_calls(response):
    calls = [o for o in response.output if o.type == "image_generation_call"]
    if not calls:
        raise RuntimeError("no image_generation_call in the first response")
    return calls


def run_sync():
    client = OpenAI()
    response = client.responses.create(model="gpt-5", input=PROMPT, tools=TOOLS, **STORE)
    print("first turn:", ", ".join(o.type for o in response.output))
    ig = image_calls(response)
    followup = client.responses.create(
        model="gpt-5", input=followup_input(ig[0].id), tools=TOOLS, **STORE
    )
    print("follow-up:", ", ".join(o.type for o in followup.output))


async def run_async():
    client = AsyncOpenAI()
    response = await client.responses.create(model="gpt-5", input=PROMPT, tools=TOOLS, **STORE)
    print("first turn:", ", ".join(o.type for o in response.output))
    ig = image_calls(response)
    followup = await client.responses.create(
        model="gpt-5", input=followup_input(ig[0].id), tools=TOOLS, **STORE
    )
    print("follow-up:", ", ".join(o.type for o in followup.output))
    await client.close()


def main():
    try:
        if "--async" in sys.argv[1:]:
            asyncio.run(run_async())
        else:
            run_sync()
    except Exception as err:  # report any failure, then exit non-zero
        print(f"FAILED: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
