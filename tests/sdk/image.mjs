// The program, verbatim in substance: an image turn on gpt-5, then a follow-up that hands
// back only the image_generation_call by id. Without rethread the API answers 400 (the reasoning
// item is missing); through rethread it succeeds.
// Base URL from OPENAI_BASE_URL, key from OPENAI_API_KEY (the SDK's defaults).
// Usage: node image.mjs [--no-store]   (--no-store: both calls with store: false, as under
// Zero Data Retention; the API then cannot look the image call up by id.)
import OpenAI from "openai";

const openai = new OpenAI();
const store = process.argv.includes("--no-store") ? { store: false } : {};

try {
  const response = await openai.responses.create({
    model: "gpt-5",
    input: "Generate an image of gray tabby cat hugging an otter with an orange scarf",
    tools: [{ type: "image_generation" }],
    ...store,
  });
  const imageGenerationCalls = response.output.filter((o) => o.type === "image_generation_call");
  if (imageGenerationCalls.length === 0) throw new Error("no image_generation_call in the first response");
  console.log(`first turn: ${response.output.map((o) => o.type).join(", ")}`);

  const followup = await openai.responses.create({
    model: "gpt-5",
    input: [
      { role: "user", content: [{ type: "input_text", text: "Now make it look realistic" }] },
      { type: "image_generation_call", id: imageGenerationCalls[0].id },
    ],
    tools: [{ type: "image_generation" }],
    ...store,
  });
  console.log(`follow-up: ${followup.output.map((o) => o.type).join(", ")}`);
  console.log("ok");
} catch (err) {
  console.error(`FAILED: ${err?.message ?? err}`);
  process.exit(1);
}
