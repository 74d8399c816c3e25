"""The failing program of the issue, with the OpenAI Agents SDK (`pip install openai-agents`).

An agent with the hosted image generation tool on gpt-5 (the Responses API) runs an image turn;
the next run's input is the new user message and the image_generation_call by id only — what an
app that keeps just the ids of generated images sends. Straight to the API that run fails with

    400 Item 'ig_…' of type 'image_generation_call' was provided without its required
    'reasoning' item: 'rs_…'.

Through rethread it succeeds, unchanged.

    OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_API_KEY=sk-… python agents_sdk.py

OPENAI_BASE_URL defaults to http://127.0.0.1:8080/v1 (rethread on its default address).
"""

import asyncio
import os
import sys

from agents import Agent, ImageGenerationTool, OpenAIResponsesModel, Runner, set_tracing_disabled
from openai import AsyncOpenAI

MODEL = os.environ.get("MODEL", "gpt-5")


def output_types(result):
    """The item types of the last model response of a run."""
    return ", ".join(item.type for item in result.raw_responses[-1].output)


async def main() -> int:
    set_tracing_disabled(True)  # no trace upload to api.openai.com
    client = AsyncOpenAI(base_url=os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1"))
    agent = Agent(
        name="Illustrator",
        instructions="Draw what you are asked for.",
        tools=[ImageGenerationTool(tool_config={"type": "image_generation"})],
        model=OpenAIResponsesModel(model=MODEL, openai_client=client),
    )

    first = await Runner.run(agent, "Generate an image of gray tabby cat hugging an otter with an orange scarf")
    print("first turn:", output_types(first))
    image_ids = [
        item.id for response in first.raw_responses for item in response.output if item.type == "image_generation_call"
    ]
    if not image_ids:
        print("no image_generation_call in the first turn", file=sys.stderr)
        return 1

    # The follow-up of the issue: the new user message and the image call by id, nothing else.
    second = await Runner.run(
        agent,
        [
            {"role": "user", "content": "Now make it look realistic"},
            {"type": "image_generation_call", "id": image_ids[0]},
        ],
    )
    print("follow-up:", output_types(second))
    await client.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
