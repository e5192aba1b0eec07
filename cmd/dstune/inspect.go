package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

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
	Unsupported    []string        `json:"unsupported_ops"`
	// DST: the trainable parameters' modules and the silos of every
	// --silo mode (inspect_silos.go), or why there are none.
	Modules  []inspectModule          `json:"modules,omitempty"`
	Silos    map[string][]inspectSilo `json:"silos,omitempty"`
	SiloEps  float64                  `json:"silo_eps,omitempty"`
	SiloNote string                   `json:"silo_note,omitempty"`
	uses     map[string][]string      // for the text form
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
	Name      string   `json:"name"`
	DType     string   `json:"dtype"`
	Shape     []int    `json:"shape"`
	Elements  int64    `json:"elements"`
	Parameter bool     `json:"parameter"`
	External  bool     `json:"external"`
	Aliases   []string `json:"aliases"`
	Uses      int      `json:"uses"`
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
	rep, err := inspectModel(pos[0], m)
	if err != nil {
		return err
	}
	if model, err := ir.NewModelShared(m); err == nil {
		if err := addSilos(rep, model, *trainable, *eps); err != nil {
			return err
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printInspect(stdout, rep)
	return nil
}

func inspectModel(path string, m *onnx.Model) (*inspectReport, error) {
	model, err := ir.NewModelShared(m)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	g := m.Graph
	rep := &inspectReport{
		Model: path, IRVersion: m.IRVersion, Opset: model.Opset, Producer: strings.TrimSpace(m.ProducerName + " " + m.ProducerVersion),
		Ops: map[string]int{}, Nodes: len(g.Nodes), Tied: []string{}, Unsupported: []string{}, uses: map[string][]string{},
		Inputs: []inspectValue{}, Outputs: []inspectValue{}, Initializers: []inspectTensor{},
	}
	for _, in := range model.Inputs {
		rep.Inputs = append(rep.Inputs, describeValue(findValueInfo(g.Inputs, in.Name)))
	}
	describeRoles(rep, model)
	for _, o := range g.Outputs {
		rep.Outputs = append(rep.Outputs, describeValue(o))
	}
	countOps(rep, g)
	sort.Strings(rep.Unsupported)
	usage := model.Usage()
	for _, info := range model.Initializers {
		t := inspectTensor{Name: info.Name, DType: info.DType.String(), Shape: info.Shape, Elements: int64(info.Shape.Size()),
			Parameter: info.Param, Aliases: []string{}}
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
				rep.uses[info.Name] = append(rep.uses[info.Name], fmt.Sprintf("%s (%s)", name, use.OpType))
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
	return rep, nil
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
		parts[i] = fmt.Sprint(d)
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

func printInspect(w io.Writer, r *inspectReport) {
	fmt.Fprintf(w, "model %s: ONNX IR %d, opset %d", r.Model, r.IRVersion, r.Opset)
	if r.Producer != "" {
		fmt.Fprintf(w, ", from %s", r.Producer)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "\ninputs:")
	for _, v := range r.Inputs {
		fmt.Fprintf(w, "  %-24s %-8s %-36s %s\n", v.Name, v.DType, shapeText(v.Shape), v.Binding)
	}
	fmt.Fprintln(w, "\noutputs:")
	for _, v := range r.Outputs {
		fmt.Fprintf(w, "  %-24s %-8s %s\n", v.Name, v.DType, shapeText(v.Shape))
	}
	ops := make([]string, 0, len(r.Ops))
	for op := range r.Ops {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	fmt.Fprintf(w, "\nops (%d nodes):\n", r.Nodes)
	for _, op := range ops {
		fmt.Fprintf(w, "  %-24s %d\n", op, r.Ops[op])
	}
	if len(r.Unsupported) > 0 {
		fmt.Fprintf(w, "  not supported by dstune: %s\n", strings.Join(r.Unsupported, ", "))
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
		kind := "param"
		if !t.Parameter {
			kind = "const"
		}
		extra := ""
		if t.Uses != 1 {
			extra = fmt.Sprintf("  %d uses", t.Uses)
		}
		if t.External {
			extra += "  (external data)"
		}
		fmt.Fprintf(w, "  %-32s %-5s %-8s %-14s %10s%s\n", t.Name, kind, t.DType, intsText(t.Shape), groupThousands(t.Elements), extra)
	}
	aliased := false
	for _, t := range r.Initializers {
		if len(t.Aliases) > 0 {
			if !aliased {
				fmt.Fprintln(w, "\naliases (Identity of an initializer):")
				aliased = true
			}
			fmt.Fprintf(w, "  %s = %s\n", t.Name, strings.Join(t.Aliases, ", "))
		}
	}
	if len(r.Tied) > 0 {
		fmt.Fprintln(w, "\ntied weights (one initializer, several uses):")
		for _, name := range r.Tied {
			fmt.Fprintf(w, "  %s: %s\n", name, strings.Join(r.uses[name], ", "))
		}
	}
	printSilos(w, r)
}

// countOps counts the operators of g and of its subgraphs (If branches,
// Loop and Scan bodies), named "domain::Op" outside the default domain,
// and lists those the importer does not know.
func countOps(rep *inspectReport, g *onnx.Graph) {
	for _, n := range g.Nodes {
		key := n.OpType
		if n.Domain != "" && n.Domain != "ai.onnx" {
			key = n.Domain + "::" + n.OpType
		}
		rep.Ops[key]++
		if !ir.IsSupportedOp(n.Domain, n.OpType) && !contains(rep.Unsupported, key) {
			rep.Unsupported = append(rep.Unsupported, key)
		}
		for _, a := range n.Attributes {
			if a.G != nil {
				countOps(rep, a.G)
			}
			for _, sub := range a.Graphs {
				countOps(rep, sub)
			}
		}
	}
}

// describeRoles fills the inputs' roles and what training and generation
// bind them to (a model whose cache inputs cannot be told apart gets
// none).
func describeRoles(rep *inspectReport, model *ir.Model) {
	plans, err := model.InputPlans()
	if err != nil {
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
