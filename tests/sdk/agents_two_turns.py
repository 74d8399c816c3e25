"""Two turns of the OpenAI Agents SDK: an Agent with a @function_tool, `Runner.run` twice, the
second turn's input built from the first result's `to_input_list()` plus a new user message, on
`OpenAIResponsesModel` (the Responses API).

Left alone, the Agents SDK replays the first turn whole — reasoning items included, each right
before its function_call or message — so that second turn is valid and succeeds even without
rethread. Legacy apps that persist chat history often drop the reasoning items
(`type == "reasoning"`) before storing it; this program does the same with the history it replays
(see `without_reasoning`), so the second turn's request hands back the function_call and the
assistant message without their reasoning items: the API refuses it, rethread repairs it.
`--keep-reasoning` replays the history unfiltered (the SDK's own behaviour; passes either way).

Base URL from OPENAI_BASE_URL, key from OPENAI_API_KEY. `SDK_TRACE=1` prints each request's
input item types on stderr.
Usage: python agents_two_turns.py [--keep-reasoning]
"""

import asyncio
import json
import os
import sys

from openai import AsyncOpenAI, DefaultAsyncHttpxClient

from agents import (
    Agent,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_default_openai_client,
    set_tracing_disabled,
)


TOOL_CALLS = []


@function_tool
def get_weather(city: str = "Paris") -> str:
    """The weather in a city.

    Args:
        city: The city.
    """
    # `city` has a default: the fake calls tools with arguments "{}".
    TOOL_CALLS.append(city)
    return json.dumps({"city": city, "forecast": "sunny", "celsius": 21})


def without_reasoning(items):
    """The history as legacy apps keep it: every item but the reasoning items."""
    return [i for i in items if not (isinstance(i, dict) and i.get("type") == "reasoning")]


def describe(items):
    return ", ".join(
        (i.get("type") or f"{i.get('role')} message") if isinstance(i, dict) else type(i).__name__ for i in items
    )


async def trace_request(request):
    if request.url.path.endswith("/responses") and request.method == "POST":
        body = json.loads(request.content or b"{}")
        items = body.get("input")
        kinds = describe(items) if isinstance(items, list) else repr(items)
        print(f"request: input=[{kinds}]", file=sys.stderr)


async def run(keep_reasoning):
    hooks = {"request": [trace_request]} if os.environ.get("SDK_TRACE") == "1" else {}
    client = AsyncOpenAI(http_client=DefaultAsyncHttpxClient(event_hooks=hooks))
    set_default_openai_client(client)
    set_tracing_disabled(True)
    agent = Agent(
        name="Weather",
        instructions="Answer questions about the weather; use the tool.",
        tools=[get_weather],
        model=OpenAIResponsesModel(model="gpt-5", openai_client=client),
    )

    first = await Runner.run(agent, "What's the weather in Paris?")
    history = first.to_input_list()
    print(f"turn 1: {first.final_output!r}; history: {describe(history)}")

    replay = history if keep_reasoning else without_reasoning(history)
    second = await Runner.run(agent, replay + [{"role": "user", "content": "And in Rome?"}])
    print(f"turn 2: {second.final_output!r}; history: {describe(second.to_input_list())}")
    await client.close()
    if not first.final_output or not second.final_output:
        raise RuntimeError("a turn ended without a final output")
    if len(TOOL_CALLS) != 2:
        raise RuntimeError(f"the tool ran {len(TOOL_CALLS)} times, not once per turn")


def main():
    try:
        asyncio.run(run("--keep-reasoning" in sys.argv[1:]))
    except Exception as err:  # report any failure, then exit non-zero
        print(f"FAILED: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
