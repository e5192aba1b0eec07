package chat

import (
	"errors"
	"strings"
	"testing"
)

func render(t *testing.T, src string, vars map[string]any) string {
	t.Helper()
	tmpl, err := Parse("t.jinja", src)
	if err != nil {
		t.Fatalf("%q: %v", src, err)
	}
	out, err := tmpl.Render(vars)
	if err != nil {
		t.Fatalf("%q: %v", src, err)
	}
	return out
}

// Where the JavaScript reference is not Python's Jinja2 (which Hugging
// Face's transformers renders with), Python's results, as Jinja2 3.1
// gives them.
func TestChatRenderPythonSemantics(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{"{{ none }}|{{ true }}|{{ false }}", "None|True|False"},
		{"{{ [1, 'a', none, true, 1.5] }}", "[1, 'a', None, True, 1.5]"},
		{`{{ {'a': "it's"} }}`, `{'a': "it's"}`},
		{"{{ 1 < 2 < 3 }}{{ 3 > 2 > 2 }}", "TrueFalse"},
		{"{{ -7 % 3 }} {{ 7 % -3 }} {{ -7 // 2 }} {{ -7.5 // 2 }} {{ 2 ** -1 }}", "2 -2 -4 -4.0 0.5"},
		{"{{ [1, 2] == [1, 2] }} {{ 'a' < 'b' }} {{ 1 == 1.0 }} {{ true == 1 }}", "True True True True"},
		{"{{ 'xxhixx'.strip('x') }}|{{ '\\n  a'.lstrip('\\n') }}|{{ 'ab  '.rstrip() }}", "hi|  a|ab"},
		{"{{ 'ab' * 3 }}{{ 3 * 'c' }}", "abababccc"},
		{"{{ 'abc' | list }}", "['a', 'b', 'c']"},
		{"{{ 2 is equalto 2 }}{{ 9 is divisibleby(3) }}{{ 9 is divisibleby 4 }}{{ 2 is eq(3) }}", "TrueTrueFalseFalse"},
		{"{{ 1e16 }} {{ 1e-5 }} {{ 0.1 + 0.2 }} {{ 1e6 }} {{ 10 / 4 }}", "1e+16 1e-05 0.30000000000000004 1000000.0 2.5"},
		{"{{ 'x' ~ none ~ 1 }}", "xNone1"},
		{"{{ 'a b  c'.split(' ') }} {{ '  a  b '.split() }} {{ 'a,b,c'.split(',', 1) }} {{ 'a,b,c'.rsplit(',', 1) }}", "['a', 'b', '', 'c'] ['a', 'b'] ['a', 'b,c'] ['a,b', 'c']"},
		{"{{ 'hello wORLD'.title() }} {{ 'hELLO' | capitalize }}", "Hello World Hello"},
		// Jinja's title filter is not str.title: words begin after spaces,
		// "-" and brackets only, and begin upper-cased, not title-cased.
		{`{{ "o'neil mc-d"|title }}|{{ "o'neil mc-d".title() }}|{{ "ǆungla"|title }}|{{ "ǆungla".title() }}`, "O'neil Mc-D|O'Neil Mc-D|Ǆungla|ǅungla"},
		// sort, min, max and sum, as Jinja's filters: strings compared
		// case-insensitively unless asked, equal keys in their order.
		{`{{ ['b', 'a', 'C']|sort }}|{{ ['b', 'a', 'C']|sort(case_sensitive=true) }}|{{ [3, 1, 2]|sort(reverse=true) }}`, "['a', 'b', 'C']|['C', 'a', 'b']|[3, 2, 1]"},
		{`{{ [{'n': 'x', 'a': 2}, {'n': 'y', 'a': 1}, {'n': 'z', 'a': 2}]|sort(attribute='a')|map(attribute='n')|list }}|{{ [{'n': 'x', 'a': 2}, {'n': 'y', 'a': 1}]|sort(attribute='a,n', reverse=true)|map(attribute='n')|join }}`, "['y', 'x', 'z']|xy"},
		{`{{ [3, 1, 2]|max }} {{ [3, 1, 2]|min }} {{ ['b', 'A']|max }} {{ ['a', 'A']|max }} {{ []|max }}.`, "3 1 b a ."},
		{`{{ [1, 2, 3]|sum }} {{ [{'a': 1}, {'a': 2}]|sum(attribute='a') }} {{ [1.5, 2]|sum(start=1) }}`, "6 3 4.5"},
		{`{{ 2.5|round }} {{ 3.5|round }} {{ 2.675|round(2) }} {{ 3|round }} {{ 1.21|round(1, 'ceil') }} {{ -1.5|round(method='floor') }} {{ 1234|round(-2, 'floor') }}`, "2.0 4.0 2.67 3 1.3 -2.0 1200.0"},
		{`{{ 1234|round(-2) }} {{ 1250|round(-2) }} {{ 1350|round(-2) }} {{ -1250|round(-2) }} {{ -1251|round(-2) }} {{ true|round }} {{ 5e-324|round(400) }}`, "1200 1200 1400 -1200 -1300 1 5e-324"},
		{`{{ dict(a=1, b='x') }}|{{ dict({'a': 1}, b=2) }}|{{ dict([('k', 'v')]) }}|{{ dict() }}`, "{'a': 1, 'b': 'x'}|{'a': 1, 'b': 2}|{'k': 'v'}|{}"},
		// A macro whose body reads varargs or kwargs takes extra
		// arguments into them, as Jinja's do.
		// (Jinja's varargs is a tuple, which this renderer prints as a
		// list: joined, they agree.)
		{`{% macro f(a) %}{{ a }}:{{ varargs|join(',') }}:{{ varargs|length }}:{{ kwargs }}{% endmacro %}{{ f(1, 2, 3, x=4) }}|{{ f(1) }}`, "1:2,3:2:{'x': 4}|1::0:{}"},
		// Full case mappings: a character may become several.
		{`{{ "straße"|upper }}|{{ "ßa".capitalize() }}|{{ "ﬁ".upper() }}|{{ "İ".lower()|length }}`, "STRASSE|Ssa|FI|2"},
		{"{{ [3, 1, 2][::-1] }} {{ [1, 2, 3, 4, 5][-2:] }} {{ 'abcdef'[1:-1:2] }} {{ [1, 2][5:] }}", "[2, 1, 3] [4, 5] bd []"},
		{"{{ {'b': 1, 'a': [1.0, 'é\\n']} | tojson }}", `{"b": 1, "a": [1.0, "é\n"]}`},
		{"{{ {'b': 1, 'a': 2} | tojson(sort_keys=true, separators=(',', ':')) }}", `{"a":2,"b":1}`},
		{"{{ 'é' | tojson(ensure_ascii=true) }}", `"\u00e9"`},
		{"{{ {'a': [1]} | tojson(indent=2) }}", "{\n  \"a\": [\n    1\n  ]\n}"},
		{"{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}", "37"},
		{"{% set a, b = 1, 2 %}{{ a }}{{ b }}", "12"},
		{"{% for x in 'ab' %}{{ loop.previtem | default('-') }}{{ x }}{{ loop.nextitem | default('-') }}{{ loop.cycle('o', 'e') }}{% endfor %}", "-aboab-e"},
		{"{% raw %}{{ x }}{% endraw %}", "{{ x }}"},
		{"{% filter upper %}abc{% endfilter %}", "ABC"},
		{"{% generation %}kept{% endgeneration %}", "kept"},
		{"{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{{ x }}", "1"},
		{"{% if true %}{% set y = 3 %}{% endif %}{{ y }}", "3"},
		{"{{ {'k': 'v'}.k }}{{ {'items': 1}['items'] }}", "v1"},
		{"{{ missing.attr is defined }}", ""}, // error case below
	} {
		if strings.Contains(c.src, "missing.attr") {
			continue
		}
		if got := render(t, c.src, nil); got != c.want {
			t.Errorf("%s\n got %q\nwant %q", c.src, got, c.want)
		}
	}
}

// trim_blocks and lstrip_blocks, as Hugging Face sets them, and "-"
// and "+" inside the delimiters.
func TestChatRenderWhitespaceControl(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{"  {% if true %}\n  yes\n  {% endif %}\nend", "  yes\nend"},
		{"a  {% if true %}b{% endif %}", "a  b"},
		{"a\n  {#- c -#}  \n  b", "ab"},
		{"a {{- ' b ' -}} c", "a b c"},
		{"x\n{# comment #}\ny", "x\ny"},
		{"  {%+ if true %}z{% endif %}", "  z"},
		{"{% for i in [1, 2] %}\n{{ i }}\n{% endfor %}", "1\n2\n"},
		{"line\r\n{% if true %}\r\nA{% endif %}", "line\nA"},
		{"a{{ \"x\ry\r\nz\" }}\r\n", "ax\ny\nz"},
		{"{% raw %}\n  x{% endraw %}|", "\n  x|"},
		{"x{% raw %}  {% endraw %}|", "x  |"},
		{"{% raw %}\n  {% endraw %}|", "\n|"},
		{"{% raw -%}\n  {% endraw %}|", "|"},
		{"{% if true %}A{% endif %}\n", "A"},
		{"A\n\n", "A\n"},
		{"{% set x %}{% endset %}[{{ x }}]", "[]"},
		{"{% set x %}{# c #}{% endset %}[{{ x }}]", "[]"},
		{"{% set x %}  {%- endset %}[{{ x }}]", "[]"},
		{"{% raw -%}  x {%- endraw %}|{% raw %}a\n   {% endraw %}|", "x|a\n|"},
	} {
		if got := render(t, c.src, nil); got != c.want {
			t.Errorf("%q\n got %q\nwant %q", c.src, got, c.want)
		}
	}
}

func TestChatRenderErrors(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{"{% if x %}", "t.jinja:1: unexpected end of the template: expected {% endif %}"},
		{"{{ x ", "t.jinja:1: tag is not closed by }}"},
		// An unclosed tag is reported where it opens.
		{"line1\n{% for m in messages %}\n{{ m.content }\n{% endfor %}\n", "t.jinja:3: tag is not closed by }}"},
		{"a\n{%- if x\n\nb", "t.jinja:2: tag is not closed by %}"},
		{"a\n{{ 'abc }}", "t.jinja:2: string literal is not closed by '"},
		{"{% while true %}{% endwhile %}", `unknown statement {% while %}`},
		{"\n\n{{ raise_exception('bad role ' ~ 3) }}", "t.jinja:3: the template raised an exception: bad role 3"},
		{"{{ missing.attr }}", "t.jinja:1: 'missing' (undefined) has no attribute 'attr'"},
		{"{{ missing + 1 }}", "unsupported operand types for +: 'missing' (undefined) and int"},
		{"{{ 1 // 0 }}", "integer division or modulo by zero"},
		{"{{ x | nosuchfilter }}", `unknown filter "nosuchfilter"`},
		{"{{ x is nosuchtest }}", `unknown test "nosuchtest"`},
		{"{% set ns.a = 1 %}", "cannot set ns.a: ns is not a namespace()"},
		{"{{ 9223372036854775807 + 1 }}", "integer overflow"},
		{"{% break %}", "break or continue outside a loop"},
		{"{{ (1, 2) | tojson }}{{ x | tojson }}", "tojson: Object of type Undefined is not JSON serializable"},
	} {
		tmpl, err := Parse("t.jinja", c.src)
		if err == nil {
			_, err = tmpl.Render(nil)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.src, err, c.want)
		}
		var e *Error
		if err != nil && !errors.As(err, &e) {
			t.Errorf("%q: %T is not an *Error", c.src, err)
		}
	}
	_, err := mustParse(t, "{{ raise_exception('Roles must alternate') }}").Render(nil)
	var raised *RaisedError
	if !errors.As(err, &raised) || raised.Message != "Roles must alternate" {
		t.Errorf("raise_exception: %v, want a RaisedError with the message", err)
	}
}

func mustParse(t *testing.T, src string) *Template {
	t.Helper()
	tmpl, err := Parse("t.jinja", src)
	if err != nil {
		t.Fatal(err)
	}
	return tmpl
}

// A template is untrusted: every way of making it run long or large
// stops at a limit with an error.
func TestChatRenderLimits(t *testing.T) {
	limits := Limits{MaxTemplateBytes: 4096, MaxSteps: 100_000, MaxOutputBytes: 1 << 20}
	for _, c := range []struct{ src, want string }{
		{"{% for i in range(100000) %}{% endfor %}", "steps"},
		{"{% for i in range(100001) %}{% endfor %}", "more than 100000 numbers"},
		{"{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}", "steps"},
		{"{% set s = 'ab' %}{% for i in range(40) %}{% set s = s + s %}{% endfor %}{{ s }}", "bytes"},
		{"{{ 'a' * 100000000 }}", "bytes"},
		{"{% set s = 'abcdefghij' * 20 %}{% for i in range(10000) %}{{ s }}{% endfor %}", "output longer than"},
		{"{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "nested more than"},
		{strings.Repeat("(", 300) + "1" + strings.Repeat(")", 300), "nested more than"},
		{strings.Repeat("{% if true %}", 300), "nested more than"},
		// A chain of operators is a tree as deep as it is long, walked
		// recursively (half a million of them took 935 MB of stack).
		{"{{ 1" + strings.Repeat(" * 1", 300) + " }}", "operators in a row"},
		{"{{ 'a'" + strings.Repeat(" ~ 'a'", 300) + " }}", "operators in a row"},
		{"{{ 1" + strings.Repeat(" if 1", 300) + " }}", "operators in a row"},
		{"{{ 1" + strings.Repeat(" + (1", 150) + strings.Repeat(")", 150) + " }}", "nested more than"},
		{strings.Repeat("x", 5000), "longer than 4096"},
		{"{{ 1" + strings.Repeat("0", 1000) + " }}", "integer literal 10000000000000000000… (1001 digits) out of range"},
		{"a{% endfor %}", "{% endfor %} without the block it would close or continue"},
		{"{% else %}", "{% else %} without the block"},
		{"{% for x in [1] %}{% if x %}{% endfor %}", "{% endfor %} where the block open here expects {% elif %}, {% else %}, {% endif %}"},
		{"{{ 1" + strings.Repeat(" ** 1", 300) + " }}", "operators in a row"},
		{"{{ 2.5|round(1.5) }}", "round's precision must be an integer, not float"},
		{"{% macro f(a) %}{{ a }}{% endmacro %}{{ f(1, 2) }}", "macro f takes 1 arguments, 2 given"},
		{"{% macro f(a) %}{{ varargs }}{% endmacro %}{{ f(1, x=2) }}", "macro f has no argument x"},
		{"{{ 0|round(0, 'up') }}", "round's method must be 'common', 'ceil' or 'floor', not 'up'"},
		{"{{ ['a', 'b']|sum(start='') }}", "sum cannot add strings"},
		{"{{ [1] * 10000000 }}", "bytes"},
		{"{{ 2 ** 100 }}", "integer overflow"},
	} {
		src := c.src
		if strings.HasPrefix(src, "(") {
			src = "{{ " + src + " }}"
		}
		tmpl, err := ParseWithLimits("t.jinja", src, limits)
		if err == nil {
			_, err = tmpl.Render(nil)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%.60q: %v, want an error with %q", src, err, c.want)
		}
	}
}

func TestChatFromTokenizerConfig(t *testing.T) {
	named := `{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "{{ bos_token }}D"}], "bos_token": {"content": "<s>"}, "eos_token": "</s>"}`
	ct, err := FromTokenizerConfig("cfg.json", []byte(named))
	if err != nil {
		t.Fatal(err)
	}
	out, err := ct.RenderChat(nil, nil, false, nil)
	if err != nil || out != "<s>D" {
		t.Errorf("named templates: %q, %v; want the default one", out, err)
	}
	if ct.Source != `cfg.json (chat_template "default")` || len(ct.SHA256) != 64 {
		t.Errorf("source %q, sha256 %q", ct.Source, ct.SHA256)
	}
	for _, c := range []struct{ config, want string }{
		{`{"bos_token": "<s>"}`, `no "chat_template"`},
		{`{"chat_template": [{"name": "tool_use", "template": "T"}]}`, `none named "default"`},
		{`{"chat_template": 3}`, "neither a string nor a list"},
		{`[]`, "not a tokenizer_config.json"},
		{`{"chat_template": "{% if %}"}`, "cfg.json:1: expected an expression"},
	} {
		if _, err := FromTokenizerConfig("cfg.json", []byte(c.config)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.config, err, c.want)
		}
	}
}

// Templates that build values growing without bound, or holding
// themselves, end with an error at a limit, quickly; the renders that
// Jinja2 completes match its output (written beside each case).
func TestChatRenderUntrustedValues(t *testing.T) {
	dag := "{% set ns = namespace(s=[0], t=[0]) %}{% for i in range(60) %}{% set ns.s = [ns.s, ns.s] %}{% set ns.t = [ns.t, ns.t] %}{% endfor %}"
	big := "{% set big = 'a' * 6000000 %}"
	for _, c := range []struct{ src, want, wantErr string }{
		{src: "{% set ns = namespace(a=1) %}{% set ns.a = ns %}{{ ns }}|{{ ns|string|length }}", want: "<Namespace {'a': <Namespace {...}>}>|36"},
		{src: dag + "{{ ns.s }}", wantErr: "bytes"},
		{src: dag + "{{ ns.s ~ '' }}", wantErr: "bytes"},
		{src: dag + "{{ ns.s|join }}", wantErr: "bytes"},
		{src: dag + "{{ ns.s == ns.t }}", wantErr: "steps"},
		{src: dag + "{{ ns.s == ns.s }}|{{ [ns.s, ns.s]|unique|list|length }}", want: "True|1"},
		{src: "{% set ns = namespace(s=0) %}{% for i in range(100000) %}{% set ns.s = [ns.s] %}{% endfor %}{{ ns.s }}", wantErr: "nested more than"},
		{src: "{% set ns = namespace(s=0) %}{% for i in range(100000) %}{% set ns.s = [ns.s] %}{% endfor %}{{ ns.s == [ns.s] }}", wantErr: "nested more than"},
		{src: "{% for c in 'a' * 20000000 %}{% break %}{% endfor %}", wantErr: "bytes"},
		{src: "{{ ('a' * 20000000)|list|length }}", wantErr: "bytes"},
		// A long string out of a long join, an indent with a long pad, a
		// join method: refused before the result is built (each was 10
		// GB).
		{src: `{{ (["a"]*100000)|join("x"*100000) }}`, wantErr: "output limit"},
		{src: `{{ ("x"*100000).join(["a"]*100000) }}`, wantErr: "output limit"},
		{src: `{{ ("a\n"*100000)|indent("x"*100000) }}`, wantErr: "output limit"},
		{src: `{{ ("a\n"*1000000)|indent(1000) }}`, wantErr: "output limit"},
		// Searching a long string costs by its length (a loop of these
		// took 25 minutes at a step a search).
		{src: `{% set s = "x" * 60000000 %}{% for i in range(100000) %}{% for j in range(100) %}{% if "y" in s %}!{% endif %}{% endfor %}{% endfor %}`, wantErr: "steps"},
		{src: `{% set s = "x" * 60000000 %}{% for i in range(100000) %}{% set n = s.count("y") %}{% endfor %}`, wantErr: "steps"},
		{src: `{% set s = "x" * 60000000 %}{% for i in range(100000) %}{% set n = s|length %}{% endfor %}`, wantErr: "steps"},
		{src: `{% set a = "x" * 30000000 %}{% set b = "x" * 29999999 ~ "y" %}{% for i in range(100000) %}{% set n = a in [b] %}{% endfor %}`, wantErr: "steps"},
		{src: `{% set a = "x" * 30000000 %}{% set b = "x" * 29999999 ~ "y" %}{% for i in range(100000) %}{% set n = a < b %}{% endfor %}`, wantErr: "steps"},
		{src: big + "{% for i in range(1000) %}{% set x = big ~ 'b' %}{% endfor %}", wantErr: "bytes"},
		{src: big + "{% for i in range(1000) %}{% set x = big[1:] %}{% endfor %}", wantErr: "bytes"},
		{src: big + "{% for i in range(1000) %}{% set x = big.upper() %}{% endfor %}", wantErr: "bytes"},
		{src: big + "{% for i in range(100000) %}{% set x = big[-1] %}{% endfor %}", wantErr: "bytes"},
		{src: "{% set a = [0] * 4000000 %}{% set b = a + a + a + a + a %}{{ b|length }}", wantErr: "bytes"},
		{src: "{% for i in range(10**9) %}{% endfor %}", wantErr: "more than 100000 numbers"},
		{src: "{{ range(100000)|length }}|{{ range(10, 0, -3)|list }}|{{ 'abcdef'[::-2] }}|{{ [1, 2, 3][1:] }}", want: "100000|[10, 7, 4, 1]|fdb|[2, 3]"},
	} {
		tmpl, err := Parse("t.jinja", c.src)
		if err != nil {
			t.Fatalf("%.60q: %v", c.src, err)
		}
		got, err := tmpl.Render(nil)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%.60q: %v, want an error with %q", c.src, err, c.wantErr)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%.60q: %q, %v; want %q", c.src, got, err, c.want)
		}
	}
}

// RenderChat defines tools and documents, None when not given, as
// transformers' apply_chat_template passes them.
func TestChatRenderToolsNone(t *testing.T) {
	ct, err := FromSource("t.jinja", "{{ tools }}|{{ tools is none }}|{{ documents is none }}|{{ tools is defined }}\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ct.RenderChat([]any{}, nil, false, nil)
	if want := "None|True|True|True"; err != nil || got != want {
		t.Errorf("got %q, %v; want %q", got, err, want)
	}
}

func FuzzChatRender(f *testing.F) {
	f.Add("{% for m in messages %}{{ m.role ~ ':' ~ m['content'] | trim }}{% if loop.last %}!{% endif %}{% endfor %}", `[{"role": "user", "content": " hi "}]`)
	f.Add("{% set ns = namespace(a=1) %}{% set ns.a = ns.a * 2 %}{{ ns.a }}{{ messages | tojson(indent=1) }}", `{"a": [1, 2.5, null]}`)
	f.Add("{{ messages[::-1][1:] | map(attribute='x') | join }}{% macro m(a, b=2) %}{{ a ~ b }}{% endmacro %}{{ m(1) }}", `[{"x": "y"}, 3]`)
	f.Add("{%- if x is defined -%}{{ 'a' if x else 'b' }}{%- elif y -%}{% raw %}{{{% endraw %}{%- endif -%}", `"s"`)
	f.Add("{% set x %}{% endset %}{% set ns = namespace(a=1) %}{% set ns.a = ns %}{{ ns }}{{ ns|string }}", `[]`)
	f.Add("{% set ns = namespace(s=[0]) %}{% for i in range(60) %}{% set ns.s = [ns.s, ns.s] %}{% endfor %}{{ ns.s == [ns.s, 1] }}{{ ns.s ~ '' }}", `[]`)
	f.Add("{% for c in 'ab' * 9 %}{% break %}{% endfor %}{{ ('x' * 9)|list }}{{ 'a' ~ 'b' ~ 'c' }}{{ range(10**9) }}", `[]`)
	f.Fuzz(func(t *testing.T, src, data string) {
		tmpl, err := ParseWithLimits("f.jinja", src, Limits{MaxSteps: 20_000, MaxOutputBytes: 1 << 16, MaxAllocBytes: 1 << 22})
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("parse error %T is not an *Error: %v", err, err)
			}
			return
		}
		messages, err := FromJSON([]byte(data))
		if err != nil {
			messages = []any{}
		}
		out, err := tmpl.Render(map[string]any{"messages": messages, "add_generation_prompt": true, "bos_token": "<s>"})
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("render error %T is not an *Error: %v", err, err)
			}
			return
		}
		if len(out) > 1<<16 {
			t.Fatalf("output of %d bytes past the limit", len(out))
		}
	})
}
