package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

func init() {
	register(&command{
		name:     "inspect",
		synopsis: []string{"MODEL.onnx [--json] [--trainable REGEX] [--eps 1e-3]"},
		summary:  "list a model's inputs, outputs, ops, parameters, aliases, tied weights and DST silos",
		flags:    func(fs *flag.FlagSet) { new(inspectFlags).define(fs) },
		run:      runInspect,
	})
}

// inspectReport is `dstune inspect --json`: one JSON object, documented in
// README.md. Keys are only ever added (silos come with a later version),
// never renamed or removed.
type inspectReport struct {
	Model          string          `json:"model"`
	IRVersion      int64           `json:"ir_version"`
	Opset          int             `json:"opset"`
	Producer       string          `json:"producer"`
	Inputs         []inspectValue  `json:"inputs"`
	Outputs        []inspectValue  `json:"outputs"`
	Nodes          int             `json:"nodes"`
	Ops            map[string]int  `json:"ops"`
	Parameters     int64           `json:"parameters"`
	ParameterBytes int64           `json:"parameter_bytes"`
	Initializers   []inspectTensor `json:"initializers"`
	Tied           []string        `json:"tied"`
	// Skipped are the initializers of types dstune does not support
	// (complex numbers) that nothing reads, left out of the import.
	Skipped     []inspectSkipped `json:"skipped_initializers"`
	Unsupported []string         `json:"unsupported_ops"`
	// Functions holds, per model-local function the graph calls (keyed
	// like Ops), the op counts of its body, which Ops includes too: it
	// says which of Ops's ops come from a function rather than the graph.
	Functions map[string]map[string]int `json:"functions"`
	// DST: the trainable parameters' modules and the silos of every
	// --silo mode (inspect_silos.go), or why there are none. Modules and
	// Silos are left out (omitzero: nil, not empty) only when SiloNote
	// says why; SiloEps is the --eps flag's, always present even at 0.
	Modules  []inspectModule          `json:"modules,omitzero"`
	Silos    map[string][]inspectSilo `json:"silos,omitzero"`
	SiloEps  float64                  `json:"silo_eps"`
	SiloNote string                   `json:"silo_note,omitempty"`
	uses     map[string][]string      // for the text form, names escaped
	// For the text form: halfModules counts the Modules stored in float16
	// or bfloat16; untrainable lists the parameters that would be Modules
	// but train cannot train, as "name (dtype)", the name escaped.
	halfModules int
	untrainable []string
	// noMatch is --trainable's expression when it matches no parameter.
	noMatch string
}

// inspectValue is a graph input or output; Shape holds a number for a
// fixed dimension, the symbolic name for a named dynamic one, "?" for an
// unknown one; it is null when the rank is unknown.
type inspectValue struct {
	Name  string `json:"name"`
	DType string `json:"dtype"`
	Shape []any  `json:"shape"`
	// Role and Binding (inputs only) say how train, generate and serve
	// feed the input (ir.InputPlans): its role, and what it is bound to
	// when dstune derives it.
	Role    string `json:"role,omitempty"`
	Binding string `json:"binding,omitempty"`
}

type inspectTensor struct {
	Name      string `json:"name"`
	DType     string `json:"dtype"`
	Shape     []int  `json:"shape"`
	Elements  int64  `json:"elements"`
	Parameter bool   `json:"parameter"`
	// ReadAtImport: a float initializer import needs the value of
	// (Resize's scales, say), so a constant rather than a parameter.
	ReadAtImport bool     `json:"read_at_import"`
	External     bool     `json:"external"`
	Aliases      []string `json:"aliases"`
	Uses         int      `json:"uses"`
}

// inspectSkipped is an initializer left out of the import.
type inspectSkipped struct {
	Name  string  `json:"name"`
	DType string  `json:"dtype"`
	Shape []int64 `json:"shape"`
}

// inspectFlags are dstune inspect's flags.
type inspectFlags struct {
	asJSON    *bool
	trainable *string
	eps       *float64
}

func (f *inspectFlags) define(fs *flag.FlagSet) {
	f.asJSON = fs.Bool("json", false, "print one JSON object (format in README.md)")
	f.trainable = fs.String("trainable", "", "DST silos of only the parameters whose names match this regular expression (as dstune train)")
	f.eps = fs.Float64("eps", 1e-3, "ε for the silos' k (entries kept free)")
}

func runInspect(args []string, stdout, stderr io.Writer) error {
	var f inspectFlags
	fs := newFlagSet("inspect", f.define)
	asJSON, trainable, eps := f.asJSON, f.trainable, f.eps
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one model file, got %d arguments", len(pos))
	}
	m, err := onnx.ReadFile(pos[0])
	if err != nil {
		return err
	}
	defer m.Close()
	if !(*eps >= 0 && *eps <= 1) {
		return usagef("--eps %g: want a fraction in [0, 1]", *eps)
	}
	rep, model, err := inspectModel(pos[0], m)
	if err != nil {
		return err
	}
	if err := addSilos(rep, model, *trainable, *eps); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printInspect(stdout, rep)
	return nil
}

// inspectModel describes everything but DST's view of m, read from path;
// it returns the imported model too, for addSilos.
func inspectModel(path string, m *onnx.Model) (*inspectReport, *ir.Model, error) {
	model, err := ir.NewModelShared(m)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	g := m.Graph
	rep := &inspectReport{
		Model: path, IRVersion: m.IRVersion, Opset: model.Opset, Producer: strings.TrimSpace(m.ProducerName + " " + m.ProducerVersion),
		Ops: map[string]int{}, Nodes: len(g.Nodes), Tied: []string{}, Skipped: []inspectSkipped{}, Unsupported: []string{}, uses: map[string][]string{},
		Functions: map[string]map[string]int{},
		Inputs:    []inspectValue{}, Outputs: []inspectValue{}, Initializers: []inspectTensor{},
	}
	for _, in := range model.Inputs {
		rep.Inputs = append(rep.Inputs, describeValue(findValueInfo(g.Inputs, in.Name)))
	}
	describeRoles(rep, model)
	for _, o := range g.Outputs {
		rep.Outputs = append(rep.Outputs, describeValue(o))
	}
	countOps(rep, m)
	sort.Strings(rep.Unsupported)
	usage := model.Usage()
	for _, info := range model.Initializers {
		t := inspectTensor{Name: info.Name, DType: info.DType.String(), Shape: info.Shape, Elements: int64(info.Shape.Size()),
			Parameter: info.Param, ReadAtImport: info.ReadAtImport, Aliases: []string{}}
		if it := g.Initializer(info.Name); it != nil && it.External != nil {
			t.External = true
		}
		if u := usage[info.Name]; u != nil {
			t.Aliases = append(t.Aliases, u.Aliases...)
			t.Uses = len(u.Uses)
			for _, use := range u.Uses {
				name := use.Node
				if name == "" {
					name = "#" + strconv.Itoa(use.Index)
				}
				text := fmt.Sprintf("%s (%s)", textName(name), textName(use.OpType))
				if use.Scope != "" {
					text += " in " + textName(use.Scope)
				}
				rep.uses[info.Name] = append(rep.uses[info.Name], text)
			}
			if t.Uses > 1 {
				rep.Tied = append(rep.Tied, info.Name)
			}
		}
		if info.Param {
			rep.Parameters += t.Elements
			rep.ParameterBytes += t.Elements * int64(info.DType.Size())
		}
		rep.Initializers = append(rep.Initializers, t)
	}
	for _, s := range model.Skipped {
		rep.Skipped = append(rep.Skipped, inspectSkipped{Name: s.Name, DType: s.Type, Shape: s.Dims})
	}
	return rep, model, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func findValueInfo(list []*onnx.ValueInfo, name string) *onnx.ValueInfo {
	for _, v := range list {
		if v.Name == name {
			return v
		}
	}
	return &onnx.ValueInfo{Name: name}
}

func describeValue(vi *onnx.ValueInfo) inspectValue {
	v := inspectValue{Name: vi.Name, DType: "?"}
	t := vi.Type
	if t == nil {
		return v
	}
	if t.Kind != onnx.TypeTensor {
		v.DType = "non-tensor"
		return v
	}
	if dt, err := ir.DTypeFromONNX(t.ElemType); err == nil {
		v.DType = dt.String()
	} else {
		v.DType = strings.ToLower(t.ElemType.String())
	}
	if t.HasShape || t.Shape != nil {
		v.Shape = []any{}
		for _, d := range t.Shape {
			switch {
			case d.HasValue:
				v.Shape = append(v.Shape, d.Value)
			case d.Param != "":
				v.Shape = append(v.Shape, d.Param)
			default:
				v.Shape = append(v.Shape, "?")
			}
		}
	}
	return v
}

func shapeText(s []any) string {
	if s == nil {
		return "(rank unknown)"
	}
	parts := make([]string, len(s))
	for i, d := range s {
		if name, ok := d.(string); ok {
			parts[i] = textName(name)
		} else {
			parts[i] = fmt.Sprint(d)
		}
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func intsText(s []int) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = strconv.Itoa(d)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// textName is a name (or producer, path, op type) from the file as the
// text form prints it: as it is when every character is printable, else
// quoted with Go's escapes (strconv.Quote). A model is untrusted input:
// unescaped, a name holding control characters could recolour or retitle
// the terminal, or end a line early and fake the lines of the report
// after it. A name that begins with a quote is quoted too, so that it
// cannot pass for an escaped one. (The JSON form is escaped by
// encoding/json.)
func textName(s string) string {
	if strings.HasPrefix(s, `"`) || !isPrintable(s) {
		return strconv.Quote(s)
	}
	return s
}

// textNames is textName of each of names.
func textNames(names []string) []string {
	out := make([]string, len(names))
	for i, s := range names {
		out[i] = textName(s)
	}
	return out
}

// textEscape escapes the characters of s that are not printable (and
// bytes that are not UTF-8) in place, as strconv.Quote would, leaving the
// rest as it is: for sentences, such as an import error, that quote the
// file's names among words of their own.
func textEscape(s string) string {
	if isPrintable(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case strconv.IsPrint(r):
			b.WriteString(s[i : i+size])
		default:
			q := strconv.QuoteRune(r) // '\x1b', '\n', '\u202e'
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}

// isPrintable says whether s is UTF-8 of printable characters only
// (strconv.IsPrint: no control, format or unassigned characters; space is
// the only white space).
func isPrintable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !strconv.IsPrint(r) {
			return false
		}
	}
	return true
}

// groupThousands writes n with commas: 120576 → 120,576.
func groupThousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// printInspect writes the text form of r; every name from the file goes
// through textName.
func printInspect(w io.Writer, r *inspectReport) {
	fmt.Fprintf(w, "model %s: ONNX IR %d, opset %d", textName(r.Model), r.IRVersion, r.Opset)
	if r.Producer != "" {
		fmt.Fprintf(w, ", from %s", textName(r.Producer))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "\ninputs:")
	for _, v := range r.Inputs {
		fmt.Fprintf(w, "  %-24s %-8s %-36s %s\n", textName(v.Name), textName(v.DType), shapeText(v.Shape), v.Binding)
	}
	fmt.Fprintln(w, "\noutputs:")
	for _, v := range r.Outputs {
		fmt.Fprintf(w, "  %-24s %-8s %s\n", textName(v.Name), textName(v.DType), shapeText(v.Shape))
	}
	ops := make([]string, 0, len(r.Ops))
	for op := range r.Ops {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	fmt.Fprintf(w, "\nops (%d nodes):\n", r.Nodes)
	for _, op := range ops {
		fmt.Fprintf(w, "  %-24s %d", textName(op), r.Ops[op])
		if body, ok := r.Functions[op]; ok {
			inner := make([]string, 0, len(body))
			for o := range body {
				inner = append(inner, o)
			}
			sort.Strings(inner)
			fmt.Fprintf(w, "  model-local function (body: %s)", strings.Join(textNames(inner), ", "))
		}
		fmt.Fprintln(w)
	}
	if len(r.Unsupported) > 0 {
		fmt.Fprintf(w, "  not supported by dstune: %s\n", strings.Join(textNames(r.Unsupported), ", "))
	}
	params := 0
	for _, t := range r.Initializers {
		if t.Parameter {
			params++
		}
	}
	fmt.Fprintf(w, "\nparameters: %s in %d tensors (%s bytes)\n", groupThousands(r.Parameters), params, groupThousands(r.ParameterBytes))
	fmt.Fprintf(w, "\ninitializers (%d):\n", len(r.Initializers))
	for _, t := range r.Initializers {
		kind, extra := "param", ""
		switch {
		case t.ReadAtImport:
			kind, extra = "const", "  (read at import)"
		case !t.Parameter:
			kind = "const"
		case t.Uses != 1: // the uses of parameters are counted
			extra = fmt.Sprintf("  %d uses", t.Uses)
		}
		if t.External {
			extra += "  (external data)"
		}
		fmt.Fprintf(w, "  %-32s %-5s %-8s %-14s %10s%s\n", textName(t.Name), kind, textName(t.DType), intsText(t.Shape), groupThousands(t.Elements), extra)
	}
	if len(r.Skipped) > 0 {
		fmt.Fprintf(w, "\nskipped (read by nothing, of types dstune does not support): %d\n", len(r.Skipped))
		for _, s := range r.Skipped {
			fmt.Fprintf(w, "  %-32s %s %s\n", textName(s.Name), s.DType, strings.ReplaceAll(dimsText(s.Shape), " ", ", "))
		}
	}
	aliased := false
	for _, t := range r.Initializers {
		if len(t.Aliases) > 0 {
			if !aliased {
				fmt.Fprintln(w, "\naliases (Identity of an initializer):")
				aliased = true
			}
			fmt.Fprintf(w, "  %s = %s\n", textName(t.Name), strings.Join(textNames(t.Aliases), ", "))
		}
	}
	if len(r.Tied) > 0 {
		fmt.Fprintln(w, "\ntied weights (one initializer, several uses):")
		for _, name := range r.Tied {
			fmt.Fprintf(w, "  %s: %s\n", textName(name), strings.Join(r.uses[name], ", "))
		}
	}
	printSilos(w, r)
}

// countOps counts the operators of m's graph, of its subgraphs (If
// branches, Loop and Scan bodies) and of the bodies of the model-local
// functions it calls, named "domain::Op" outside the default domain, and
// lists those the importer does not know. Like a subgraph, a function's
// body is counted once however often it is called (the counts are of the
// file, not of the graph after import inlines every call), and only
// functions the graph calls, directly or through other functions, count:
// dstune imports no other. A call is no operator of its own: it is
// supported when the ops of the body are, which are checked like the
// graph's.
func countOps(rep *inspectReport, m *onnx.Model) {
	c := opCounter{model: m, rep: rep}
	c.nodes(m.Graph.Nodes, rep.Ops)
	for _, body := range rep.Functions {
		for op, n := range body {
			rep.Ops[op] += n
		}
	}
}

// opCounter is countOps' walk.
type opCounter struct {
	model *onnx.Model
	rep   *inspectReport
}

// nodes adds the ops of nodes and of their subgraphs to counts; the body
// of a function called for the first time goes to rep.Functions.
func (c *opCounter) nodes(nodes []*onnx.Node, counts map[string]int) {
	for _, n := range nodes {
		key := opKey(n)
		counts[key]++
		// The importer's lookup (ir's localFunction): a model-local
		// function of the node's domain and op type, ahead of any
		// operator of that name.
		if fn := c.model.Function(n.Domain, n.OpType, ""); fn != nil {
			if _, counted := c.rep.Functions[key]; !counted {
				body := map[string]int{}
				// Recorded before the body is walked, so that a function
				// calling itself is counted once, not forever.
				c.rep.Functions[key] = body
				c.nodes(fn.Nodes, body)
			}
		} else if !ir.IsSupportedOp(n.Domain, n.OpType) && !contains(c.rep.Unsupported, key) {
			c.rep.Unsupported = append(c.rep.Unsupported, key)
		}
		for _, a := range n.Attributes {
			if a.G != nil {
				c.nodes(a.G.Nodes, counts)
			}
			for _, sub := range a.Graphs {
				if sub != nil {
					c.nodes(sub.Nodes, counts)
				}
			}
		}
	}
}

// opKey is how the report names n's op type: "domain::Op" outside the
// default domain.
func opKey(n *onnx.Node) string {
	if n.OpType == "" {
		return "(empty op_type)"
	}
	if n.Domain != "" && n.Domain != "ai.onnx" {
		return n.Domain + "::" + n.OpType
	}
	return n.OpType
}

// describeRoles fills the inputs' roles and what training and generation
// bind them to (a model whose cache inputs cannot be told apart gets
// none).
func describeRoles(rep *inspectReport, model *ir.Model) {
	plans, err := model.InputPlans()
	if err != nil {
		// The roles cannot be told apart: train, generate and serve
		// cannot feed this model; say so on every input.
		for i := range rep.Inputs {
			rep.Inputs[i].Role, rep.Inputs[i].Binding = ir.RoleOther.String(), "not derived: "+err.Error()
		}
		return
	}
	for i, p := range plans {
		v := &rep.Inputs[i]
		v.Role = p.Role.String()
		switch p.Role {
		case ir.RoleTokens:
			v.Binding = "the token ids"
		case ir.RoleAttentionMask:
			v.Binding = "1 at tokens, 0 at padding"
		case ir.RolePositionIDs:
			v.Binding = "derived from the attention mask (count of tokens before, 1 at padding)"
		case ir.RoleTokenTypeIDs:
			v.Binding = "zeros"
		case ir.RolePast:
			v.Binding = fmt.Sprintf("bound empty (dimension %d = 0) when training; the cache when generating", p.PastAxis)
		case ir.RoleCacheBranch:
			v.Binding = "bound false (the branch without a cache) when training"
		default:
			v.Binding = "not derived: train cannot feed it"
		}
	}
}
