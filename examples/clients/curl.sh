#!/bin/sh
# The failing program of the issue, with curl (POSIX sh; uses jq when installed, grep otherwise).
#
# An image turn on gpt-5, then a follow-up that hands back only the image_generation_call by id.
# Straight to the API the follow-up fails with
#   400 Item 'ig_…' of type 'image_generation_call' was provided without its required
#   'reasoning' item: 'rs_…'.
# Through rethread it succeeds, unchanged: rethread inserts the reasoning item (and the rest of
# the turn) before forwarding it, and says so in `x-rethread-inserted`.
#
#   OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_API_KEY=sk-… sh curl.sh
#
# OPENAI_BASE_URL defaults to http://127.0.0.1:8080/v1 (rethread on its default address).
set -eu

BASE_URL=${OPENAI_BASE_URL:-http://127.0.0.1:8080/v1}
BASE_URL=${BASE_URL%/}
MODEL=${MODEL:-gpt-5}
: "${OPENAI_API_KEY:?set OPENAI_API_KEY (any value for the fake)}"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# POST BODY to /responses; the body lands in $tmp/body, the headers in $tmp/headers.
create() {
  status=$(curl -sS -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}' "$BASE_URL/responses" \
    -H "Authorization: Bearer $OPENAI_API_KEY" -H 'Content-Type: application/json' -d "$1")
  if [ "$status" != 200 ]; then
    echo "HTTP $status: $(cat "$tmp/body")" >&2
    exit 1
  fi
}

# The item types of the response's output, in order.
output_types() {
  if command -v jq >/dev/null 2>&1; then
    jq -r '[.output[].type] | join(", ")' "$tmp/body"
  else # output items are the only objects with these "type"s (content parts are output_text, …)
    grep -o -E '"type": ?"([a-z_]+_call|reasoning|message|mcp_list_tools|mcp_approval_request)"' "$tmp/body" |
      sed -E 's/.*"([a-z_]+)"$/\1/' | tr '\n' ' ' | sed -e 's/ $//' -e 's/ /, /g'
  fi
}

create '{"model":"'"$MODEL"'","input":"Generate an image of gray tabby cat hugging an otter with an orange scarf","tools":[{"type":"image_generation"}]}'
echo "first turn: $(output_types)"
if command -v jq >/dev/null 2>&1; then
  ig=$(jq -r '[.output[] | select(.type == "image_generation_call") | .id][0] // empty' "$tmp/body")
else
  ig=$(grep -o -E '"id": ?"ig_[A-Za-z0-9_-]+"' "$tmp/body" | head -n 1 | sed -E 's/.*"(ig_[^"]+)"$/\1/')
fi
if [ -z "$ig" ]; then
  echo "no image_generation_call in the first turn" >&2
  exit 1
fi

# The follow-up of the issue: the new user message and the image call by id, nothing else.
create '{"model":"'"$MODEL"'","tools":[{"type":"image_generation"}],"input":[
  {"role":"user","content":[{"type":"input_text","text":"Now make it look realistic"}]},
  {"type":"image_generation_call","id":"'"$ig"'"}]}'
echo "follow-up: $(output_types)"
inserted=$(grep -i '^x-rethread-inserted:' "$tmp/headers" | tr -d '\r' | sed 's/^[^:]*: *//')
echo "x-rethread-inserted: ${inserted:-(none: not through rethread?)}"
