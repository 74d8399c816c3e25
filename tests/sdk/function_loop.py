"""A function-calling loop as many apps write it, with the Python SDK: keep the conversation as a
list and, after each turn, append only the function_call items (the SDK's own output objects) and
their function_call_output — never the reasoning item. The API refuses the second request;
rethread puts the reasoning item back.

Usage: python function_loop.py [--async]
"""

import asyncio
import json
import sys

from openai import AsyncOpenAI, OpenAI

TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": [],
            "additionalProperties": False,
        },
        "strict": False,
    }
]


def get_weather(**_args):
    return json.dumps({"forecast": "sunny", "celsius": 21})


def step(turn, response, conversation):
    """Appends the calls and their outputs; returns the answer when there are no calls."""
    print(f"turn {turn}:", ", ".join(o.type for o in response.output))
    calls = [o for o in response.output if o.type == "function_call"]
    if not calls:
        return response.output_text
    for call in calls:
        conversation.append(call)  # the call as the SDK returned it, WITHOUT its reasoning item
        conversation.append(
            {
                "type": "function_call_output",
                "call_id": call.call_id,
                "output": get_weather(**json.loads(call.arguments or "{}")),
            }
        )
    return None


def run_sync():
    client = OpenAI()
    conversation = [{"role": "user", "content": "What's the weather in Paris?"}]
    for turn in range(4):
        response = client.responses.create(model="gpt-5", input=conversation, tools=TOOLS)
        answer = step(turn, response, conversation)
        if answer is not None:
            return answer
    raise RuntimeError("the loop never produced an answer")


async def run_async():
    client = AsyncOpenAI()
    conversation = [{"role": "user", "content": "What's the weather in Paris?"}]
    try:
        for turn in range(4):
            response = await client.responses.create(model="gpt-5", input=conversation, tools=TOOLS)
            answer = step(turn, response, conversation)
            if answer is not None:
                return answer
        raise RuntimeError("the loop never produced an answer")
    finally:
        await client.close()


def main():
    try:
        answer = asyncio.run(run_async()) if "--async" in sys.argv[1:] else run_sync()
        if not answer:
            raise RuntimeError("empty answer")
    except Exception as err:  # report any failure, then exit non-zero
        print(f"FAILED: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)
    print(f"answer: {answer}")
    print("ok")


if __name__ == "__main__":
    main()
