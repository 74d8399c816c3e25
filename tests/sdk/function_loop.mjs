// A function-calling loop as many apps write it: keep the conversation as a list, and after each
// turn append only the function_call items (taken from the output) and their
// function_call_output — never the reasoning item. The API refuses the second request; rethread
// puts the reasoning item back.
import OpenAI from "openai";

const openai = new OpenAI();
const tools = [
  {
    type: "function",
    name: "get_weather",
    description: "The weather in a city.",
    parameters: {
      type: "object",
      properties: { city: { type: "string" } },
      required: [],
      additionalProperties: false,
    },
    strict: false,
  },
];

function getWeather(_args) {
  return JSON.stringify({ forecast: "sunny", celsius: 21 });
}

try {
  const input = [{ role: "user", content: "What's the weather in Paris?" }];
  let answer = null;
  for (let turn = 0; turn < 4 && answer === null; turn++) {
    const response = await openai.responses.create({ model: "gpt-5", input, tools });
    console.log(`turn ${turn}: ${response.output.map((o) => o.type).join(", ")}`);
    const calls = response.output.filter((o) => o.type === "function_call");
    if (calls.length === 0) {
      answer = response.output_text;
      break;
    }
    for (const call of calls) {
      input.push(call); // the call as the SDK returned it, WITHOUT its reasoning item
      input.push({
        type: "function_call_output",
        call_id: call.call_id,
        output: getWeather(JSON.parse(call.arguments || "{}")),
      });
    }
  }
  if (!answer) throw new Error("the loop never produced an answer");
  console.log(`answer: ${answer}`);
  console.log("ok");
} catch (err) {
  console.error(`FAILED: ${err?.message ?? err}`);
  process.exit(1);
}
