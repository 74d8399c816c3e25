// The failing program of the issue, with the official Node SDK (`npm i openai`).
//
// An image turn on gpt-5, then a follow-up that hands back only the image_generation_call by id.
// Straight to the API the follow-up fails with
//   400 Item 'ig_…' of type 'image_generation_call' was provided without its required
//   'reasoning' item: 'rs_…'.
// Through rethread it succeeds, unchanged: rethread inserts the reasoning item (and the rest of
// the turn) before forwarding it.
//
//   OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_API_KEY=sk-… node node_sdk.mjs
//
// OPENAI_BASE_URL defaults to http://127.0.0.1:8080/v1 (rethread on its default address).
import OpenAI from "openai";

const model = process.env.MODEL ?? "gpt-5";
const tools = [{ type: "image_generation" }];
const openai = new OpenAI({ baseURL: process.env.OPENAI_BASE_URL ?? "http://127.0.0.1:8080/v1" });

const response = await openai.responses.create({
  model,
  input: "Generate an image of gray tabby cat hugging an otter with an orange scarf",
  tools,
});
console.log(`first turn: ${response.output.map((item) => item.type).join(", ")}`);
const imageGenerationCalls = response.output.filter((item) => item.type === "image_generation_call");
if (imageGenerationCalls.length === 0) {
  console.error("no image_generation_call in the first turn");
  process.exit(1);
}

// The follow-up of the issue: the new user message and the image call by id, nothing else.
const { data: followup, response: raw } = await openai.responses
  .create({
    model,
    input: [
      { role: "user", content: [{ type: "input_text", text: "Now make it look realistic" }] },
      { type: "image_generation_call", id: imageGenerationCalls[0].id },
    ],
    tools,
  })
  .withResponse();
console.log(`follow-up: ${followup.output.map((item) => item.type).join(", ")}`);
console.log(`x-rethread-inserted: ${raw.headers.get("x-rethread-inserted") ?? "(none: not through rethread?)"}`);
