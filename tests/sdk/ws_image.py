"""The issue's program over the Responses API's WebSocket mode, with the Python SDK's
`client.responses.connect()`: an image turn, then a follow-up that hands back only the
image_generation_call by id. Fails against the API without rethread; succeeds through rethread,
which repairs the `response.create` frame.

Base URL from OPENAI_BASE_URL (the SDK connects to ws://…/responses under it), key from
OPENAI_API_KEY.
Usage: python ws_image.py
"""

import sys

from openai import OpenAI

PROMPT = "Generate an image of gray tabby cat hugging an otter with an orange scarf"
TOOLS = [{"type": "image_generation"}]


def turn(connection, **fields):
    """Sends one response.create and returns the completed items, or raises on an error event."""
    connection.response.create(model="gpt-5", tools=TOOLS, **fields)
    items = []
    for event in connection:
        if event.type == "response.output_item.done":
            items.append(event.item)
        elif event.type == "error":
            raise RuntimeError(getattr(event, "error", None) or event)
        elif event.type in ("response.completed", "response.failed", "response.incomplete"):
            return items
    raise RuntimeError("the socket closed before the response completed")


def main():
    client = OpenAI(max_retries=0)
    try:
        with client.responses.connect(max_retries=0) as connection:
            first = turn(connection, input=PROMPT)
            print("first turn:", ", ".join(i.type for i in first))
            ig = [i for i in first if i.type == "image_generation_call"]
            if not ig:
                raise RuntimeError("no image_generation_call in the first response")
            followup = turn(
                connection,
                input=[
                    {"role": "user", "content": [{"type": "input_text", "text": "Now make it look realistic"}]},
                    {"type": "image_generation_call", "id": ig[0].id},
                ],
            )
            print("follow-up:", ", ".join(i.type for i in followup))
    except Exception as err:  # report any failure, then exit non-zero
        print(f"FAILED: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
