// Package chat renders the chat templates that ship with models (the
// "chat_template" of a Hugging Face tokenizer_config.json): a Jinja2
// subset interpreter written for them, with the environment Hugging
// Face's apply_chat_template uses (trim_blocks, lstrip_blocks, the
// break and continue statements, raise_exception, strftime_now, and a
// tojson that writes as Python's json.dumps(ensure_ascii=False)).
//
// Use:
//
//	ct, err := chat.FromTokenizerConfig("tokenizer_config.json", data)
//	text, err := ct.RenderChat(messages, nil, true, nil) // messages: []any of *chat.Dict
//
// It knows text, {{ }}, {% %} and {# #} with "-" whitespace control;
// if/elif/else, for (with loop.index0, index, first, last, length,
// revindex, previtem, nextitem, cycle, a loop filter and an else), set
// (also of namespace attributes and as a block), macro, filter blocks,
// raw, and {% generation %} (rendered as its body); the Python literals,
// operators, slices, comparisons and conditional expressions; the string
// and dict methods templates call; and the filters and tests listed in
// filters.go. Values follow Python's semantics: {{ none }} renders
// "None", true "True" and a list its repr, as Jinja2 does (the
// JavaScript Jinja of transformers.js renders them otherwise). A missing
// variable, attribute or item is undefined: false as a condition, empty
// when rendered, iterated as empty, and an error in arithmetic or when
// its own attributes are read, as Jinja2's default Undefined.
//
// Templates are untrusted input: the source's size, the nesting of
// blocks, expressions and calls, the evaluation steps of one render and
// the size of its output and of any value built on the way are bounded
// (Limits), and a template that goes past them fails with an *Error
// naming the template and line, as do parse errors and the template's own
// raise_exception (whose message Error.Raised carries).
package chat
