"""The issue's program, streamed, with the Python SDK. The first turn's items are collected from
`response.output_item.done` events; the follow-up (streamed too) hands back only the
image_generation_call by id. Fails against the API without rethread; succeeds through it.

Two ways of streaming:
  --variant create   client.responses.create(..., stream=True), iterating the events (default)
  --variant stream   client.responses.stream(...) context manager, plus get_final_response()
Usage: python image_stream.py [--variant create|stream] [--async]
"""

import argparse
import asyncio
import sys

from openai import AsyncOpenAI, OpenAI

PROMPT = "Generate an image of gray tabby cat hugging an otter with an orange scarf"
TOOLS = [{"type": "image_generation"}]


def followup_input(ig_id):
    return [
        {"role": "user", "content": [{"type": "input_text", "text": "Now make it look realistic"}]},
        {"type": "image_generation_call", "id": ig_id},
    ]


class Collector:
    """Collects completed items from `response.output_item.done`; fails on a failed stream."""

    def __init__(self):
        self.items = []
        self.completed = False

    def see(self, event):
        if event.type == "response.output_item.done":
            self.items.append(event.item)
        elif event.type == "response.completed":
            self.completed = True
        elif event.type in ("response.failed", "error"):
            raise RuntimeError(f"stream failed: {event}")

    def done(self, label):
        if not self.completed:
            raise RuntimeError("stream ended without response.completed")
        print(f"{label}:", ", ".join(i.type for i in self.items))
        return self.items


def image_id(items):
    calls = [i for i in items if i.type == "image_generation_call"]
    if not calls:
        raise RuntimeError("no image_generation_call in the first stream")
    return calls[0].id


def turn_sync(client, variant, label, **params):
    seen = Collector()
    if variant == "create":
        for event in client.responses.create(stream=True, **params):
            seen.see(event)
    else:
        with client.responses.stream(**params) as stream:
            for event in stream:
                seen.see(event)
            final = stream.get_final_response()
        if final.status != "completed":
            raise RuntimeError(f"final response is {final.status}")
    return seen.done(label)


async def turn_async(client, variant, label, **params):
    seen = Collector()
    if variant == "create":
        async for event in await client.responses.create(stream=True, **params):
            seen.see(event)
    else:
        async with client.responses.stream(**params) as stream:
            async for event in stream:
                seen.see(event)
            final = await stream.get_final_response()
        if final.status != "completed":
            raise RuntimeError(f"final response is {final.status}")
    return seen.done(label)


def run_sync(variant):
    client = OpenAI()
    first = turn_sync(client, variant, "first turn", model="gpt-5", input=PROMPT, tools=TOOLS)
    turn_sync(client, variant, "follow-up", model="gpt-5", input=followup_input(image_id(first)), tools=TOOLS)


async def run_async(variant):
    client = AsyncOpenAI()
    first = await turn_async(client, variant, "first turn", model="gpt-5", input=PROMPT, tools=TOOLS)
    await turn_async(client, variant, "follow-up", model="gpt-5", input=followup_input(image_id(first)), tools=TOOLS)
    await client.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", choices=["create", "stream"], default="create")
    parser.add_argument("--async", dest="use_async", action="store_true")
    args = parser.parse_args()
    try:
        if args.use_async:
            asyncio.run(run_async(args.variant))
        else:
            run_sync(args.variant)
    except Exception as err:  # report any failure, then exit non-zero
        print(f"FAILED: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
