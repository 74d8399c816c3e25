// The program with `stream: true`: the first turn's items are collected from
// `response.output_item.done` events, then the follow-up (streamed too) hands back only the
// image_generation_call by id. Fails against the API without rethread; succeeds through it.
import OpenAI from "openai";

const openai = new OpenAI();
const tools = [{ type: "image_generation" }];

async function collect(stream) {
  const items = [];
  let completed = false;
  for await (const event of stream) {
    if (event.type === "response.output_item.done") items.push(event.item);
    if (event.type === "response.completed") completed = true;
    if (event.type === "response.failed" || event.type === "error") {
      throw new Error(`stream failed: ${JSON.stringify(event)}`);
    }
  }
  if (!completed) throw new Error("stream ended without response.completed");
  return items;
}

try {
  const first = await collect(
    await openai.responses.create({
      model: "gpt-5",
      input: "Generate an image of gray tabby cat hugging an otter with an orange scarf",
      tools,
      stream: true,
    }),
  );
  console.log(`first turn: ${first.map((o) => o.type).join(", ")}`);
  const ig = first.filter((o) => o.type === "image_generation_call");
  if (ig.length === 0) throw new Error("no image_generation_call in the first stream");

  const followup = await collect(
    await openai.responses.create({
      model: "gpt-5",
      input: [
        { role: "user", content: [{ type: "input_text", text: "Now make it look realistic" }] },
        { type: "image_generation_call", id: ig[0].id },
      ],
      tools,
      stream: true,
    }),
  );
  console.log(`follow-up: ${followup.map((o) => o.type).join(", ")}`);
  console.log("ok");
} catch (err) {
  console.error(`FAILED: ${err?.message ?? err}`);
  process.exit(1);
}
