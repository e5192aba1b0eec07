package faults

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dstune/dstune/demo"
	"github.com/dstune/dstune/internal/crashpoint"
)

// dstuneBin is the dstune binary TestMain builds.
var dstuneBin string

// long is set for the long suite (tests/faults/long.sh).
var long = os.Getenv("DSTUNE_FAULTS_LONG") == "1"

// execEnv, when set, makes the test binary a launcher: it sets the limits
// the JSON value gives (launch) and replaces itself with the command.
const execEnv = "DSTUNE_FAULTS_EXEC"

type launch struct {
	FileSize int64    `json:"file_size"` // RLIMIT_FSIZE in bytes
	Argv     []string `json:"argv"`
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(execEnv); spec != "" {
		os.Exit(launchLimited(spec))
	}
	dir, err := os.MkdirTemp("", "dstune-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dstuneBin = filepath.Join(dir, "dstune")
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	args := []string{"build", "-o", dstuneBin}
	if buildTags != "" {
		args = append(args, "-tags", buildTags)
	}
	cmd := exec.Command(goTool, append(args, "github.com/dstune/dstune/cmd/dstune")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building dstune: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// launchLimited sets the resource limits of spec and executes its command
// in this process.
func launchLimited(spec string) int {
	var l launch
	if err := json.Unmarshal([]byte(spec), &l); err != nil || len(l.Argv) == 0 {
		fmt.Fprintf(os.Stderr, "%s: %v\n", execEnv, err)
		return 2
	}
	if l.FileSize > 0 {
		lim := syscall.Rlimit{Cur: uint64(l.FileSize), Max: uint64(l.FileSize)}
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
			fmt.Fprintf(os.Stderr, "setrlimit: %v\n", err)
			return 2
		}
	}
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, execEnv+"=") {
			env = append(env, e)
		}
	}
	err := syscall.Exec(l.Argv[0], l.Argv, env)
	fmt.Fprintf(os.Stderr, "exec %s: %v\n", l.Argv[0], err)
	return 2
}

// result is how a dstune process ended.
type result struct {
	code           int
	killed         bool // by SIGKILL
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d (killed %v)\n%s%s", r.code, r.killed, r.stdout, r.stderr)
}

// dstune runs the binary with extra environment variables.
func dstune(t *testing.T, env []string, args ...string) result {
	t.Helper()
	return wait(t, start(t, env, args...))
}

type process struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
}

func start(t *testing.T, env []string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(dstuneBin, args...)}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return p
}

func wait(t *testing.T, p *process) result {
	t.Helper()
	err := p.cmd.Wait()
	r := result{stdout: p.stdout.String(), stderr: p.stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			r.killed = true
		}
	default:
		t.Fatal(err)
	}
	return r
}

// dstuneLimited runs the binary under a file-size limit (RLIMIT_FSIZE):
// a write beyond it fails as on a full disk.
func dstuneLimited(t *testing.T, fileSize int64, args ...string) result {
	t.Helper()
	spec, _ := json.Marshal(launch{FileSize: fileSize, Argv: append([]string{dstuneBin}, args...)})
	p := &process{cmd: exec.Command(os.Args[0])}
	p.cmd.Env = append(os.Environ(), execEnv+"="+string(spec))
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return wait(t, p)
}

// ---------------------------------------------------------------- the job

// job is the base model, its data and the uninterrupted runs' artifacts.
type job struct {
	dir, model, data, valid string
	ref                     map[string]artifacts // by method (and steps)
	refTime                 map[string]time.Duration
	mu                      sync.Mutex
}

var (
	theJob  *job
	jobOnce sync.Once
)

// fixture writes the demo's base model and a small reverse-upper task
// (the demo's own data) once for all tests.
func fixture(t *testing.T) *job {
	t.Helper()
	jobOnce.Do(func() {
		// Inside the directory TestMain removes when the tests end.
		dir, err := os.MkdirTemp(filepath.Dir(dstuneBin), "job-")
		if err != nil {
			panic(err)
		}
		j := &job{dir: dir, model: filepath.Join(dir, "base.onnx"), data: filepath.Join(dir, "train.jsonl"), valid: filepath.Join(dir, "valid.jsonl"),
			ref: map[string]artifacts{}, refTime: map[string]time.Duration{}}
		if err := os.WriteFile(j.model, demo.BaseModel, 0o644); err != nil {
			panic(err)
		}
		trainSet, validSet := demo.TaskData(demo.ReverseUpper, 200, 16, 1)
		if err := demo.WriteJSONL(j.data, trainSet); err != nil {
			panic(err)
		}
		if err := demo.WriteJSONL(j.valid, validSet); err != nil {
			panic(err)
		}
		theJob = j
	})
	if theJob == nil {
		t.Fatal("the fixture could not be written")
	}
	return theJob
}

// trainArgs are a run's flags: 12 steps (a checkpoint every 3), or steps.
func (j *job) trainArgs(method, out string, steps int) []string {
	args := []string{"train", j.model, "--data", j.data, "--valid", j.valid, "--task", "lm", "--method", method,
		"--steps", fmt.Sprint(steps), "--batch", "8", "--checkpoint-every", "3", "--eval-every", "6",
		"--seed", "1", "--lr", "0.01", "--threads", "1", "--out", out}
	if method == "dst" {
		args = append(args, "--eps", "0.01")
	}
	return args
}

// reference is the uninterrupted run's artifacts (made once).
func (j *job) reference(t *testing.T, method string, steps int) (artifacts, time.Duration) {
	t.Helper()
	key := fmt.Sprintf("%s/%d", method, steps)
	j.mu.Lock()
	defer j.mu.Unlock()
	if a, ok := j.ref[key]; ok {
		return a, j.refTime[key]
	}
	out := filepath.Join(j.dir, "ref-"+strings.ReplaceAll(key, "/", "-"))
	start := time.Now()
	if r := dstune(t, nil, j.trainArgs(method, out, steps)...); r.code != 0 {
		t.Fatalf("reference run: %v", r)
	}
	j.refTime[key] = time.Since(start)
	j.ref[key] = collect(t, out, method)
	return j.ref[key], j.refTime[key]
}

// artifacts are the sha256 of a finished run's results, by file; the
// metrics by their steps and losses (step times vary).
type artifacts map[string]string

func collect(t *testing.T, run, method string) artifacts {
	t.Helper()
	a := artifacts{}
	files := []string{"checkpoint/params.safetensors", "checkpoint/optimizer.safetensors", "checkpoint/state.json", "checkpoint.json"}
	switch method {
	case "dst":
		files = append(files, "checkpoint/method.safetensors", "delta.safetensors")
	case "full":
		files = append(files, "model.onnx")
	}
	for _, f := range files {
		a[f] = sha256File(t, filepath.Join(run, f))
	}
	data, err := os.ReadFile(filepath.Join(run, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var losses strings.Builder
	for line := range bytes.Lines(data) {
		var rec struct {
			Step      int64    `json:"step"`
			Loss      *float64 `json:"loss"`
			ValidLoss *float64 `json:"valid_loss"`
		}
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("metrics.jsonl: %v: %q", err, line)
		}
		fmt.Fprintf(&losses, "%d %v %v\n", rec.Step, deref(rec.Loss), deref(rec.ValidLoss))
	}
	a["metrics.jsonl (steps and losses)"] = fmt.Sprintf("%x", sha256.Sum256([]byte(losses.String())))
	return a
}

func deref(p *float64) any {
	if p == nil {
		return "-"
	}
	return *p
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return "missing: " + err.Error()
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// same compares a run's artifacts with the reference's.
func same(t *testing.T, got, want artifacts) {
	t.Helper()
	for f, w := range want {
		if got[f] != w {
			t.Errorf("%s differs from the uninterrupted run's", f)
		}
	}
}

// leftovers lists what a crash may leave in a run directory that a
// finished run must not hold any more.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	var found []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		name := d.Name()
		if strings.Contains(name, ".tmp") || name == "checkpoint.old" {
			rel, _ := filepath.Rel(dir, path)
			found = append(found, rel)
		}
		return nil
	})
	return found
}

// recover continues a run as a user would after a crash: --resume while
// it has a config.json, else the same command again.
func (j *job) recover(t *testing.T, method, out string, steps int) {
	t.Helper()
	for range 3 {
		args := j.trainArgs(method, out, steps)
		if _, err := os.Stat(filepath.Join(out, "config.json")); err == nil {
			args = []string{"train", "--resume", out}
		}
		r := dstune(t, nil, args...)
		if r.code == 0 {
			return
		}
		t.Fatalf("recovering %s: %v", out, r)
	}
}

// snapshot hashes every file of a directory except the lock (whose
// holder note changes with every run that takes it).
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	s := map[string]string{}
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() != ".lock" {
			rel, _ := filepath.Rel(dir, path)
			s[rel] = sha256File(t, path)
		}
		return nil
	})
	return s
}

func sameSnapshot(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	var diffs []string
	for f := range want {
		if got[f] != want[f] {
			diffs = append(diffs, f)
		}
	}
	for f := range got {
		if _, ok := want[f]; !ok {
			diffs = append(diffs, f+" (new)")
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		t.Errorf("%s changed the run directory: %v", what, diffs)
	}
}

// ---------------------------------------------------------------- tests

// TestKillAtCrashPoints kills training at every point where a crash could
// leave something half done, resumes, and checks the finished run against
// the uninterrupted one.
func TestKillAtCrashPoints(t *testing.T) {
	j := fixture(t)
	points := map[string][]string{
		"dst": {
			"train.step:4", "train.step:12",
			"checkpoint.written:2", "checkpoint.swapping:2", "checkpoint.swapped:2", "checkpoint.swapping:4",
			"atomicfile.filled:params.safetensors:3", "atomicfile.rename:optimizer.safetensors:1",
			"atomicfile.rename:state.json:2", "atomicfile.filled:checkpoint.json:1", "atomicfile.rename:checkpoint.json:4",
			"atomicfile.filled:delta.safetensors:2", "atomicfile.rename:delta.safetensors:4",
			"atomicfile.filled:config.json:1", "atomicfile.rename:config.json:1",
		},
		"full": {
			"train.step:7", "checkpoint.swapping:1", "checkpoint.swapped:4",
			"atomicfile.filled:model.onnx:1", "atomicfile.rename:model.onnx:1",
		},
	}
	if long {
		// Every point at every checkpoint (12 steps, a checkpoint every 3).
		for _, method := range []string{"dst", "full"} {
			points[method] = nil
			for k := 1; k <= 12; k++ {
				points[method] = append(points[method], fmt.Sprintf("train.step:%d", k))
			}
			files := []string{"params.safetensors", "optimizer.safetensors", "state.json", "checkpoint.json"}
			if method == "dst" {
				files = append(files, "method.safetensors", "delta.safetensors")
			}
			for k := 1; k <= 4; k++ {
				for _, p := range []string{"checkpoint.written", "checkpoint.swapping", "checkpoint.swapped"} {
					points[method] = append(points[method], fmt.Sprintf("%s:%d", p, k))
				}
				for _, f := range files {
					points[method] = append(points[method], fmt.Sprintf("atomicfile.filled:%s:%d", f, k), fmt.Sprintf("atomicfile.rename:%s:%d", f, k))
				}
			}
			points[method] = append(points[method], "atomicfile.filled:config.json:1", "atomicfile.rename:config.json:1")
		}
		points["full"] = append(points["full"], "atomicfile.filled:model.onnx:1", "atomicfile.rename:model.onnx:1")
	}
	for _, method := range []string{"dst", "full"} {
		want, _ := j.reference(t, method, 12)
		for _, point := range points[method] {
			t.Run(method+"/"+point, func(t *testing.T) {
				out := filepath.Join(t.TempDir(), "run")
				r := dstune(t, []string{crashpoint.Env + "=" + point}, j.trainArgs(method, out, 12)...)
				if !r.killed {
					t.Fatalf("not killed at %s: %v", point, r)
				}
				j.recover(t, method, out, 12)
				same(t, collect(t, out, method), want)
				if l := leftovers(t, out); len(l) > 0 {
					t.Errorf("left behind: %v", l)
				}
			})
		}
	}
}

// TestKillAtRandomTimes kills training (SIGKILL) at random moments, one
// kill or several in a row, and resumes.
func TestKillAtRandomTimes(t *testing.T) {
	j := fixture(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	n := 3
	if long {
		n = 200
	}
	for i := range n {
		method := []string{"dst", "full"}[i%2]
		want, took := j.reference(t, method, 12)
		out := filepath.Join(t.TempDir(), fmt.Sprint("run", i))
		for kills := 1 + rng.IntN(3); kills > 0; kills-- {
			args := j.trainArgs(method, out, 12)
			if _, err := os.Stat(filepath.Join(out, "config.json")); err == nil {
				args = []string{"train", "--resume", out}
			}
			p := start(t, nil, args...)
			time.Sleep(time.Duration(rng.Int64N(int64(took) * 5 / 4)))
			p.cmd.Process.Signal(syscall.SIGKILL)
			if r := wait(t, p); !r.killed && r.code != 0 {
				t.Fatalf("run %d: %v", i, r)
			}
		}
		j.recover(t, method, out, 12)
		same(t, collect(t, out, method), want)
		if l := leftovers(t, out); len(l) > 0 {
			t.Errorf("run %d: left behind: %v", i, l)
		}
	}
}

// TestConcurrentResumes resumes one run twice at once: one resume runs,
// the other is refused at once naming the first's pid, and the run ends
// as the uninterrupted one.
func TestConcurrentResumes(t *testing.T) {
	j := fixture(t)
	const steps = 48
	want, _ := j.reference(t, "dst", steps)
	out := filepath.Join(t.TempDir(), "run")
	if r := dstune(t, []string{crashpoint.Env + "=train.step:4"}, j.trainArgs("dst", out, steps)...); !r.killed {
		t.Fatalf("not killed: %v", r)
	}
	a, b := start(t, nil, "train", "--resume", out), start(t, nil, "train", "--resume", out)
	ra, rb := wait(t, a), wait(t, b)
	refused := 0
	for _, r := range []result{ra, rb} {
		switch {
		case r.code == 0:
		case r.code == 1 && strings.Contains(r.stderr, "is in use by pid "):
			refused++
		default:
			t.Errorf("a resume failed otherwise: %v", r)
		}
	}
	if refused > 1 {
		t.Fatal("both resumes were refused")
	}
	if refused == 0 {
		t.Log("the resumes did not overlap (both ran to the end)")
	} else {
		t.Log("one resume ran, the other was refused")
	}
	same(t, collect(t, out, "dst"), want)
}

// TestCorruptCheckpoints resumes from damaged checkpoints: each is refused
// naming what is wrong, and changes nothing; restored, the run finishes
// as the uninterrupted one.
func TestCorruptCheckpoints(t *testing.T) {
	j := fixture(t)
	want, _ := j.reference(t, "dst", 12)
	out := filepath.Join(t.TempDir(), "run")
	if r := dstune(t, []string{crashpoint.Env + "=train.step:7"}, j.trainArgs("dst", out, 12)...); !r.killed {
		t.Fatalf("not killed: %v", r)
	}
	ckpt := filepath.Join(out, "checkpoint")
	flip := func(name string, at func(size int) int) func() {
		return func() {
			path := filepath.Join(ckpt, name)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			b[at(len(b))] ^= 0x01
			os.WriteFile(path, b, 0o644)
		}
	}
	cases := []struct {
		name   string
		damage func()
		says   string
	}{
		{"params header bit", flip("params.safetensors", func(int) int { return 20 }), "params.safetensors: sha256"},
		{"params value bit", flip("params.safetensors", func(n int) int { return n / 2 }), "params.safetensors: sha256"},
		{"optimizer last bit", flip("optimizer.safetensors", func(n int) int { return n - 1 }), "optimizer.safetensors: sha256"},
		{"method bit", flip("method.safetensors", func(n int) int { return n - 3 }), "method.safetensors: sha256"},
		{"state.json step", func() {
			path := filepath.Join(ckpt, "state.json")
			b, _ := os.ReadFile(path)
			os.WriteFile(path, bytes.Replace(b, []byte(`"step": 6`), []byte(`"step": 9`), 1), 0o644)
		}, "state.json: sha256"},
		{"params cut", func() {
			path := filepath.Join(ckpt, "params.safetensors")
			b, _ := os.ReadFile(path)
			os.WriteFile(path, b[:len(b)/3], 0o644)
		}, "params.safetensors: sha256"},
		{"method gone", func() { os.Remove(filepath.Join(ckpt, "method.safetensors")) }, "method.safetensors, which state.json records, is missing"},
		{"checkpoint gone", func() { os.RemoveAll(ckpt) }, "the checkpoint of step 6, which checkpoint.json records, is missing"},
	}
	backup := filepath.Join(t.TempDir(), "backup")
	if err := os.CopyFS(backup, os.DirFS(ckpt)); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		c.damage()
		before := snapshot(t, out)
		r := dstune(t, nil, "train", "--resume", out)
		if r.code != 1 || !strings.Contains(r.stderr, c.says) {
			t.Errorf("%s: %v\nwant exit 1 saying %q", c.name, r, c.says)
		}
		sameSnapshot(t, "the refused resume ("+c.name+")", snapshot(t, out), before)
		os.RemoveAll(ckpt)
		if err := os.CopyFS(ckpt, os.DirFS(backup)); err != nil {
			t.Fatal(err)
		}
	}
	j.recover(t, "dst", out, 12)
	same(t, collect(t, out, "dst"), want)
}

// TestFullDisk makes writes fail as on a full disk: with a file-size
// limit (RLIMIT_FSIZE, any user) and, where an unprivileged user may
// mount one (or as root in the long suite), a small tmpfs. The run stops
// with the error and its last checkpoint intact; with room again it ends
// as the uninterrupted one. apply leaves no file behind.
func TestFullDisk(t *testing.T) {
	j := fixture(t)
	want, _ := j.reference(t, "dst", 12)
	out := filepath.Join(t.TempDir(), "run")
	if r := dstune(t, []string{crashpoint.Env + "=train.step:4"}, j.trainArgs("dst", out, 12)...); !r.killed {
		t.Fatalf("not killed: %v", r)
	}
	// optimizer.safetensors (950 KB) does not fit in 600 KB.
	r := dstuneLimited(t, 600_000, "train", "--resume", out)
	if r.code != 1 || !strings.Contains(r.stderr, "file too large") {
		t.Fatalf("resume on a full disk: %v", r)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "checkpoint.json")); !bytes.Contains(b, []byte(`"step": 3`)) {
		t.Errorf("checkpoint.json after the failed write: %s", b)
	}
	j.recover(t, "dst", out, 12)
	same(t, collect(t, out, "dst"), want)
	if l := leftovers(t, out); len(l) > 0 {
		t.Errorf("left behind: %v", l)
	}

	applied := filepath.Join(t.TempDir(), "tuned.onnx")
	r = dstuneLimited(t, 100_000, "apply", j.model, filepath.Join(out, "delta.safetensors"), "-o", applied)
	if r.code != 1 || !strings.Contains(r.stderr, "file too large") {
		t.Errorf("apply on a full disk: %v", r)
	}
	if entries, _ := os.ReadDir(filepath.Dir(applied)); len(entries) != 0 {
		t.Errorf("apply on a full disk left %v", entries)
	}

	t.Run("tmpfs", func(t *testing.T) { fullTmpfs(t, j, want) })
}

// fullTmpfs runs training with its run directory on a 2 MB tmpfs (room for
// one checkpoint, not for the next beside it), then copies the directory
// out and finishes the run there.
func fullTmpfs(t *testing.T, j *job, want artifacts) {
	dir := t.TempDir()
	mnt, copied := filepath.Join(dir, "mnt"), filepath.Join(dir, "copied")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	quote := func(args []string) string {
		q := make([]string, len(args))
		for i, a := range args {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		return strings.Join(q, " ")
	}
	script := fmt.Sprintf("mount -t tmpfs -o size=2m tmpfs %s || exit 97; %s > %s/out.txt 2>&1; echo $? > %s/code; cp -a %s %s; umount %s",
		quote([]string{mnt}), quote(append([]string{dstuneBin}, j.trainArgs("dst", filepath.Join(mnt, "run"), 12)...)),
		quote([]string{dir}), quote([]string{dir}), quote([]string{filepath.Join(mnt, "run")}), quote([]string{copied}), quote([]string{mnt}))
	var cmd *exec.Cmd
	switch {
	case long && os.Geteuid() == 0:
		cmd = exec.Command("sh", "-c", script)
	default:
		if _, err := exec.LookPath("unshare"); err != nil {
			t.Skip("no unshare(1): a tmpfs needs root or a user namespace")
		}
		if out, err := exec.Command("unshare", "-rm", "true").CombinedOutput(); err != nil {
			t.Skipf("this system does not let an unprivileged user mount a tmpfs (unshare -rm: %v %s); the file-size limit above stands in for a full disk", err, bytes.TrimSpace(out))
		}
		cmd = exec.Command("unshare", "-rm", "sh", "-c", script)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 97 {
			t.Skipf("cannot mount a tmpfs here: %s", out)
		}
		t.Fatalf("%v: %s", err, out)
	}
	code, _ := os.ReadFile(filepath.Join(dir, "code"))
	output, _ := os.ReadFile(filepath.Join(dir, "out.txt"))
	if strings.TrimSpace(string(code)) != "1" || !strings.Contains(string(output), "no space left on device") {
		t.Fatalf("training on a full tmpfs: exit %s\n%s", code, output)
	}
	var rec struct{ Step int64 }
	b, _ := os.ReadFile(filepath.Join(copied, "checkpoint.json"))
	json.Unmarshal(b, &rec)
	t.Logf("on the full tmpfs: %s; the last checkpoint is step %d", lastLine(output), rec.Step)
	j.recover(t, "dst", copied, 12)
	same(t, collect(t, copied, "dst"), want)
	if l := leftovers(t, copied); len(l) > 0 {
		t.Errorf("left behind: %v", l)
	}
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// TestKillDuringApply kills apply while it writes: no output, and the
// next apply writes the same bytes as an uninterrupted one and removes
// the leftover.
func TestKillDuringApply(t *testing.T) {
	j := fixture(t)
	j.reference(t, "dst", 12)
	delta := filepath.Join(j.dir, "ref-dst-12", "delta.safetensors")
	dir := t.TempDir()
	ref := filepath.Join(dir, "ref.onnx")
	if r := dstune(t, nil, "apply", j.model, delta, "-o", ref); r.code != 0 {
		t.Fatal(r)
	}
	want := sha256File(t, ref)
	for _, point := range []string{"atomicfile.filled:tuned.onnx:1", "atomicfile.rename:tuned.onnx:1"} {
		out := filepath.Join(t.TempDir(), "tuned.onnx")
		if r := dstune(t, []string{crashpoint.Env + "=" + point}, "apply", j.model, delta, "-o", out); !r.killed {
			t.Fatalf("%s: not killed: %v", point, r)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%s: the output exists after the kill", point)
		}
		if l := leftovers(t, filepath.Dir(out)); len(l) != 1 {
			t.Errorf("%s: after the kill %v, want the one temporary file", point, l)
		}
		if r := dstune(t, nil, "apply", j.model, delta, "-o", out); r.code != 0 {
			t.Fatalf("%s: apply again: %v", point, r)
		}
		if got := sha256File(t, out); got != want {
			t.Errorf("%s: the output differs from an uninterrupted apply's", point)
		}
		if l := leftovers(t, filepath.Dir(out)); len(l) > 0 {
			t.Errorf("%s: left behind: %v", point, l)
		}
	}
}
