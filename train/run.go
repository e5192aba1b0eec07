package train

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/internal/atomicfile"
	"github.com/dstune/dstune/internal/crashpoint"
	"github.com/dstune/dstune/internal/flock"
	"github.com/dstune/dstune/internal/outpath"
	"github.com/dstune/dstune/internal/pages"
	"github.com/dstune/dstune/internal/regfile"
	"github.com/dstune/dstune/internal/sysmem"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
	"github.com/dstune/dstune/tokenizer"
	"github.com/dstune/dstune/update"
)

// Config defines a training run; it is stored as RUN/config.json, and a
// resumed run must be given the same (RunOptions.Resume).
type Config struct {
	Model       string `json:"model"`        // the ONNX file (absolute path)
	ModelSHA256 string `json:"model_sha256"` // of the file's bytes; filled in by Run
	Data        string `json:"data"`
	Valid       string `json:"valid,omitempty"`
	// The data files' sha256 and sizes, filled in by Run: a resumed run
	// refuses changed data unless RunOptions.AllowDataChange.
	DataSHA256  string `json:"data_sha256,omitempty"`
	DataSize    int64  `json:"data_size,omitempty"`
	ValidSHA256 string `json:"valid_sha256,omitempty"`
	ValidSize   int64  `json:"valid_size,omitempty"`
	// DataChanges records the resumes that continued on changed data.
	DataChanges []DataChange `json:"data_changes,omitempty"`
	// StepsChanges records the resumes that changed Steps.
	StepsChanges []StepsChange   `json:"steps_changes,omitempty"`
	Task         Task            `json:"task"`
	Method       string          `json:"method"`
	DST          json.RawMessage `json:"dst,omitempty"`       // --method dst's options, as package dst reads them (dst.Options)
	LoRA         json.RawMessage `json:"lora,omitempty"`      // --method lora's options, as package peft reads them (peft.LoRAOptions)
	Prompt       json.RawMessage `json:"prompt,omitempty"`    // --method prompt's options (peft.PromptOptions)
	Trainable    string          `json:"trainable,omitempty"` // regexp on parameter names; "" = every float parameter
	// Tokenizer encodes the data's text fields (absolute path; "" when the
	// data holds token ids); TokenizerSHA256 is its file's, filled in by Run.
	Tokenizer       string `json:"tokenizer,omitempty"`
	TokenizerSHA256 string `json:"tokenizer_sha256,omitempty"`
	// ChatTemplate renders the data's "messages" rows (absolute path of a
	// Jinja template or a tokenizer_config.json; "" for the
	// tokenizer_config.json beside Tokenizer); ChatTemplateSHA256
	// identifies the template that did (chat.ChatTemplate.SHA256),
	// filled in by Run when the data has such rows.
	ChatTemplate       string `json:"chat_template,omitempty"`
	ChatTemplateSHA256 string `json:"chat_template_sha256,omitempty"`
	// TextEncoding is how the run encodes text, set by Run for a new run
	// (TextJoined) and kept by a resumed one, so that a run goes on
	// training on the tokens it started with: 0, a run of an earlier
	// version, encoded a text prompt and completion apart and cut texts
	// at MaxLen like token ids.
	TextEncoding int              `json:"text_encoding,omitempty"`
	Optimizer    update.Optimizer `json:"optimizer"`
	Schedule     Schedule         `json:"schedule"`
	Steps        int64            `json:"steps"`
	Batch        int              `json:"batch"`
	// MaxLen truncates examples; every batch is padded to T = MaxLen, or
	// to the longest example of the training and validation data when 0
	// (one static shape, compiled once).
	MaxLen  int    `json:"max_len"`
	PadID   int64  `json:"pad_id"`
	Seed    uint64 `json:"seed"`
	Backend string `json:"backend"`
	// Threads may change when a run is resumed: every kernel gives the
	// same bits for any thread count (config.json keeps the first).
	Threads   int   `json:"threads"`
	EvalEvery int64 `json:"eval_every"` // validation every N steps (and after the last); 0: only after the last
	// Metric is the validation metric reported besides the loss
	// (MetricTokenAccuracy, MetricExactMatch, MetricAccuracy; "" or
	// MetricLoss: the loss alone).
	Metric          string `json:"metric,omitempty"`
	CheckpointEvery int64  `json:"checkpoint_every"` // 0: only at the end (and on interruption)
	// CheckpointMinutes writes a checkpoint after the first step that
	// ends this long or longer after the last checkpoint (or the start);
	// 0: no such checkpoints. Every checkpoint is a full copy of the
	// run's state, so a cadence in steps would write gigabytes a minute
	// on a large model with quick steps.
	CheckpointMinutes float64 `json:"checkpoint_minutes,omitempty"`
	// Precision is the arithmetic of the model's matrix products
	// (accel.Precision: "fp32" when empty, or "bf16").
	Precision string `json:"precision,omitempty"`
	// GradAccum is how many batches of Batch rows a step's gradient is
	// accumulated over before its one update (0 or 1: one batch).
	GradAccum int `json:"grad_accum,omitempty"`
	// MaxGradNorm clips the gradients' global L2 norm to it before the
	// update, as torch.nn.utils.clip_grad_norm_ (0: no clipping).
	MaxGradNorm float64 `json:"max_grad_norm,omitempty"`
	// KeepBest keeps the run's outputs as of its best validation in
	// RUN/best (BestDir); Patience stops the run after that many
	// validations in a row without a new best (0: never). Both need
	// Valid.
	KeepBest bool  `json:"keep_best,omitempty"`
	Patience int64 `json:"patience,omitempty"`
}

// DataChange is a resume that continued on a changed data file (with
// --allow-data-change): from the step after Step on, File (data or valid)
// is the one of sha256 SHA256, no longer the one of Was.
type DataChange struct {
	Step   int64  `json:"step"`
	File   string `json:"file"`
	Was    string `json:"was_sha256"`
	SHA256 string `json:"sha256"`
}

// StepsChange is a resume that changed the run's step count (--steps
// with --resume): from the step after Step on, the run goes to Steps, no
// longer to Was, and the learning-rate schedule spans Steps.
type StepsChange struct {
	Step  int64 `json:"step"`
	Was   int64 `json:"was"`
	Steps int64 `json:"steps"`
}

// MaxGradAccum bounds Config.GradAccum: a step holds its batches at once.
const MaxGradAccum = 1 << 16

// DefaultCheckpointMinutes is dstune train's checkpoint cadence.
const DefaultCheckpointMinutes = 10

// Check reports what is wrong with a configuration.
func (c *Config) Check() error {
	switch {
	case c.Model == "":
		return errors.New("no model")
	case c.Data == "":
		return errors.New("no training data")
	case c.Task != TaskLM && c.Task != TaskClassify:
		return fmt.Errorf("unknown task %q (want %s or %s)", c.Task, TaskLM, TaskClassify)
	case c.Steps < 1:
		return fmt.Errorf("steps %d, want ≥ 1", c.Steps)
	case c.Batch < 1:
		return fmt.Errorf("batch %d, want ≥ 1", c.Batch)
	case c.MaxLen < 0:
		return fmt.Errorf("max length %d, want ≥ 0", c.MaxLen)
	case c.PadID < 0:
		// It would wrap to another token in the embedding's Gather.
		return fmt.Errorf("--pad-id %d, want a token id ≥ 0", c.PadID)
	case c.Threads < 1:
		return fmt.Errorf("threads %d, want ≥ 1", c.Threads)
	case c.EvalEvery < 0 || c.CheckpointEvery < 0 || c.CheckpointMinutes < 0 || math.IsNaN(c.CheckpointMinutes):
		return errors.New("eval and checkpoint intervals must not be negative")
	case c.GradAccum < 0 || c.GradAccum > MaxGradAccum:
		return fmt.Errorf("--grad-accum %d, want 1 to %d", c.GradAccum, MaxGradAccum)
	case !(c.MaxGradNorm >= 0) || c.MaxGradNorm > math.MaxFloat32:
		return fmt.Errorf("--max-grad-norm %g, want a norm ≥ 0 within float32's range (0: no clipping)", c.MaxGradNorm)
	case c.Patience < 0:
		return fmt.Errorf("--patience %d, want a number of validations ≥ 1 (0: never stop early)", c.Patience)
	case c.Patience > 0 && c.EvalEvery == 0:
		return errors.New("--patience counts the validations during the run, and --eval-every 0 validates only after the last step: give --eval-every N")
	case (c.KeepBest || c.Patience > 0) && c.Valid == "":
		return errors.New("--keep-best and --patience follow the validation: give --valid")
	}
	if _, err := accel.ParsePrecision(c.Precision); err != nil {
		return err
	}
	if err := c.Optimizer.Check(); err != nil {
		return err
	}
	if err := checkOptimizerPrecision(c.Optimizer); err != nil {
		return err
	}
	if err := checkMetric(c.Metric, c.Task); err != nil {
		return err
	}
	if c.Metric != "" && c.Metric != MetricLoss && c.Valid == "" {
		return fmt.Errorf("--metric %s is computed on the validation data: give --valid", c.Metric)
	}
	if err := c.checkMethodOptions(); err != nil {
		return err
	}
	return c.Schedule.Check(c.Steps)
}

// ConfigFile is the name of a run's configuration file.
const ConfigFile = "config.json"

// LoadConfig reads RUN/config.json. Its errors name the file and say what
// is wrong: missing (the run never started: one stopped before it
// recorded its configuration saved nothing), empty, cut short, not a
// configuration, or followed by more text.
func LoadConfig(run string) (Config, error) {
	var c Config
	path := filepath.Join(run, ConfigFile)
	data, err := regfile.ReadRegular(path, 1<<20)
	if errors.Is(err, fs.ErrNotExist) {
		return c, noConfigError(run)
	}
	if err != nil {
		return c, err
	}
	if err := decodeJSONFile(data, &c, true); err != nil {
		return c, fmt.Errorf("%s: %w (damaged, or edited by hand): restore it from a copy, or start the run again in another directory", path, err)
	}
	return c, nil
}

// noConfigError is LoadConfig's error for a run directory without
// config.json.
func noConfigError(run string) error {
	path := filepath.Join(run, ConfigFile)
	if st, err := os.Lstat(run); err == nil && st.Mode()&fs.ModeSymlink != 0 {
		if _, err := os.Stat(run); err != nil {
			target, _ := os.Readlink(run)
			return fmt.Errorf("%s: %w: %s is a dangling symbolic link (to %s)", path, fs.ErrNotExist, run, target)
		}
	} else if err != nil {
		return fmt.Errorf("%s: %w: there is no directory %s", path, fs.ErrNotExist, run)
	}
	if savedSomething(run) {
		return fmt.Errorf("%s: %w, but %s holds a checkpoint: restore %s (checkpoint/state.json records the run's settings) to resume it",
			path, fs.ErrNotExist, run, ConfigFile)
	}
	return fmt.Errorf("%s: %w: the run never started (it was stopped or failed before it recorded its configuration, and saved nothing): start it with the original dstune train command, without --resume",
		path, fs.ErrNotExist)
}

// RunOptions say where a run writes and how it reports; they are not part
// of the run's definition.
type RunOptions struct {
	Dir    string // the run directory
	Resume bool   // continue the run in Dir from its checkpoint
	// Progress receives the progress display (nil: none); Terminal
	// redraws one line instead of printing a line every LogEvery steps.
	Progress io.Writer
	Terminal bool
	LogEvery int64
	// Source replaces the graphs built from Config.Model (tests); the
	// fine-tuned model file is then not written.
	Source GraphSource
	// BackendOptions are the backend's machine-specific settings, which
	// are not part of the run (accel.OpenWith's settings), e.g.
	// "pjrt-plugin".
	BackendOptions map[string]string
	// AfterStep is called after every step is complete (metrics and any
	// checkpoint written); an error ends the run at once, as a crash
	// would (tests).
	AfterStep func(step int64) error
	// AfterRestore is called when a resumed run has restored its
	// checkpoint of step and written the run's files again from it
	// (DST's delta, the adapters: a crash may have come between a
	// checkpoint and their write), before its next step; an error ends
	// the run (dstune sweep keeps a copy of the files of every
	// checkpoint).
	AfterRestore func(step int64) error
	// OnStep, when set, is called after every training step with the
	// engine, the step's (first) batch, its statistics and wall time, before
	// anything of the step is saved; an error ends the run at once with
	// nothing of that step saved (dstune profile step times a few real
	// steps this way, and then the nodes of one).
	OnStep func(e *Engine, b *Batch, stats StepStats, wall time.Duration) error
	// AllowDataChange lets a resumed run continue on data files whose
	// sha256 differs from config.json's (recorded there, with the step,
	// in data_changes); the run goes on with the next epoch of the new
	// data.
	AllowDataChange bool
	// MaxMemory is the memory budget in bytes a step's estimate must fit
	// (0: sysmem.Default, 3/4 of the memory this process may use). It
	// bounds the batch, not the run: a resumed run may change it.
	MaxMemory int64
	// MemoryReport prints to Progress what a step holds in memory
	// (MemoryReport's parts) after the first step this process takes,
	// and the process's peak resident memory at the end.
	MemoryReport bool
	// SeedFileMin is the size of Θ0 from which a DST run keeps it in
	// files — in place in the model's, the rest in a seed file it writes
	// in Dir — and maps them only while it selects (0: 256 MiB; < 0:
	// never: Θ0 stays in memory, in place or copied). The results are
	// the same either way.
	SeedFileMin int64
}

// Result summarizes a run.
type Result struct {
	Step             int64   // the last step taken
	Loss             float64 // its training loss (NaN: this call took no step, the run was complete)
	InitialValidLoss float64 // before the first step (NaN: no validation data, or a resumed run)
	ValidLoss        float64 // the last validation loss (NaN: none)
	// InitialValidMetric and ValidMetric are Config.Metric's value before
	// the first step and at the last validation (NaN: none).
	InitialValidMetric, ValidMetric float64
	ModelFile                       string // the fine-tuned model, when written
	// BestStep is the step of the best validation (Config.KeepBest,
	// Config.Patience; 0: none); StoppedEarly says that Config.Patience
	// ended the run (in this call or an earlier one), with why.
	BestStep     int64
	StoppedEarly string
}

// ErrInterrupted ends a run stopped by its context (Ctrl-C) after saving
// a checkpoint.
var ErrInterrupted = errors.New("interrupted")

// The files of a run directory.
const (
	MetricsFile = "metrics.jsonl"
	ModelFile   = "model.onnx"
)

// Run trains as cfg says, writing config.json, metrics.jsonl, checkpoints
// and the fine-tuned model into opts.Dir. Cancelling ctx ends the run
// after the current step with a checkpoint and an error wrapping
// ErrInterrupted. A non-finite loss ends it with a *LossError, NaN or ±Inf
// in a gradient, a parameter or the optimizer state with a
// *NonFiniteError; nothing of that step is saved, and the last good
// checkpoint is kept.
func Run(ctx context.Context, cfg Config, opts RunOptions) (*Result, error) {
	// Its files are named by joining to it, which reads "link/.." as the
	// kernel does not: the lock would be in another directory than the
	// one made for the run.
	opts.Dir = outpath.Resolve(opts.Dir)
	r := &runner{cfg: cfg, opts: opts, stepFLOPs: map[BatchShape]float64{}, res: &Result{Loss: math.NaN(), InitialValidLoss: math.NaN(), ValidLoss: math.NaN(), InitialValidMetric: math.NaN(), ValidMetric: math.NaN()}}
	defer r.close()
	if err := r.setup(ctx); err != nil {
		r.discardNewDir()
		return nil, err
	}
	return r.res, r.loop(ctx)
}

// outermostMissing is the outermost of dir and its parents that does not
// exist: what os.MkdirAll(dir) creates.
func outermostMissing(dir string) string {
	top := filepath.Clean(dir)
	for p := filepath.Dir(top); p != top; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err == nil {
			break
		}
		top = p
	}
	return top
}

// discardNewDir undoes what a new run that failed before it was recorded
// (config.json) did to its directory: the lock file goes, and the
// directory if the run created it, so that a mistyped command leaves
// nothing behind.
func (r *runner) discardNewDir() {
	if r.opts.Resume || r.lock == nil || r.oldConfig {
		return
	}
	if _, err := os.Lstat(filepath.Join(r.opts.Dir, ConfigFile)); !os.IsNotExist(err) {
		return
	}
	r.lock.Remove()
	r.lock = nil
	if r.madeDir == "" {
		return
	}
	// The directory and the parents MkdirAll made for it, while empty.
	for dir := filepath.Clean(r.opts.Dir); ; dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil || dir == r.madeDir {
			return
		}
	}
}

// errInterruptedEarly is Run's error when ctx ends before the first step
// of a new run (a resumed one says where it stands: interrupted).
var errInterruptedEarly = fmt.Errorf("%w before the first step: nothing to save (run the same command again to start it)", ErrInterrupted)

// interruptedEarly is the error of a run whose ctx ended before its first
// step (of this Run).
func (r *runner) interruptedEarly() error {
	if r.opts.Resume {
		return fmt.Errorf("%w while resuming, before its next step: the run stays as its checkpoint left it (resume it again)", ErrInterrupted)
	}
	return errInterruptedEarly
}

// checkValidLoss stops a run whose validation loss after step is not
// finite: it diverged as surely as one whose training loss is not, and the
// step is not saved (nor is a NaN written to metrics.jsonl, which JSON
// cannot hold).
func (r *runner) checkValidLoss(step int64, v validation) error {
	if !math.IsNaN(v.loss) && !math.IsInf(v.loss, 0) {
		return nil
	}
	r.progress.done()
	return r.stopped(&LossError{Step: step, Loss: v.loss, Validation: true})
}

type runner struct {
	cfg  Config
	opts RunOptions
	res  *Result

	onnxModel *onnx.Model
	// halfParams are the parameters the model stores in float16 or
	// bfloat16 (trained as float32 master copies), by stored dtype.
	halfParams map[string]ir.DType
	src        GraphSource
	engine     *Engine
	method     Method
	train      *TrainBatches
	valid      *Dataset
	batchOpts  BatchOptions
	metrics    *os.File
	metricsW   *bufio.Writer
	progress   *progress
	lastCkpt   int64
	lock       *flock.Lock
	shared     *sharedSource
	seeds      *seedStore // a DST run's Θ0 in files (nil: none)
	// stepsWere is config.json's step count when a resume changes it (0:
	// it does not).
	stepsWere int64
	// dataChanged: a resumed run goes on with changed data
	// (RunOptions.AllowDataChange).
	dataChanged bool
	// identity is the run's configuration as its checkpoints record it
	// (runIdentity).
	identity json.RawMessage
	// madeDir is the outermost directory a new run created for its
	// directory ("": none); oldConfig: it found the config.json of a run
	// that saved no checkpoint there (discardNewDir).
	madeDir   string
	oldConfig bool
	// emptyBatches counts the steps whose batch had no target.
	emptyBatches int
	// lastCkptTime is when the last checkpoint was written, or the loop
	// started (Config.CheckpointMinutes).
	lastCkptTime time.Time
	// peakGFLOPS is the backend's peak for the run's products (0:
	// unknown), stepFLOPs the products of a training graph by batch
	// shape: model FLOPs utilization is a step's products / its time /
	// the peak.
	peakGFLOPS float64
	stepFLOPs  map[BatchShape]float64
	// best follows the validations for Config.KeepBest and Patience.
	best *bestTracker
}

func (r *runner) close() {
	if r.metricsW != nil {
		r.metricsW.Flush()
	}
	if r.metrics != nil {
		r.metrics.Close()
	}
	if r.engine != nil {
		r.engine.Close()
	}
	r.seeds.close()
	if r.onnxModel != nil {
		r.onnxModel.Close()
	}
	r.lock.Unlock()
}

// setup prepares the run; an interruption (ctx ending) between its
// phases, each at most a few seconds on a large model, ends it.
func (r *runner) setup(ctx context.Context) error {
	stored, err := r.checkRunDir()
	if err != nil {
		return err
	}
	model, shape, err := r.openSource(stored)
	if err != nil {
		return err
	}
	if err := r.checkInputs(); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return r.interruptedEarly()
	}
	ds, err := r.loadData(shape)
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return r.interruptedEarly()
	}
	if err := r.newEngine(model); err != nil {
		return r.batchHint(err)
	}
	if ctx.Err() != nil {
		return r.interruptedEarly()
	}
	if err := r.checkMemory(); err != nil {
		return r.batchHint(err)
	}
	if err := r.startData(ds); err != nil {
		return err
	}
	if err := r.openMetrics(); err != nil {
		return err
	}
	return r.restoreBest()
}

// checkRunDir checks the configuration and the run directory: a new run's
// is created (and must not hold a run yet), a resumed run's config.json
// must agree with the configuration; it returns the stored one.
func (r *runner) checkRunDir() (stored Config, err error) {
	cfg, dir := &r.cfg, r.opts.Dir
	if dir == "" {
		return stored, errors.New("no run directory")
	}
	if err := cfg.Check(); err != nil {
		if r.opts.Resume {
			// Read from the run's config.json (edited by hand?).
			return stored, fmt.Errorf("resume: %s: %w", filepath.Join(dir, ConfigFile), err)
		}
		return stored, err
	}
	if !r.opts.Resume {
		cfg.TextEncoding = TextJoined
		st, err := os.Lstat(dir)
		if os.IsNotExist(err) {
			r.madeDir = outermostMissing(dir)
		}
		if err == nil && st.Mode()&fs.ModeSymlink != 0 {
			if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
				target, _ := os.Readlink(dir)
				return stored, fmt.Errorf("%s is a dangling symbolic link (to %s, which does not exist): create the directory it names, remove the link, or choose another run directory", dir, target)
			}
		}
		if err := os.MkdirAll(dir, 0o777); err != nil { // less the umask, as mkdir's
			return stored, err
		}
		if err := r.lockRunDir(); err != nil {
			return stored, err
		}
		_, err = os.Stat(filepath.Join(dir, ConfigFile))
		if err != nil && savedSomething(dir) {
			return stored, fmt.Errorf("%s holds a checkpoint but no %s, which a new run would write over: restore %s (checkpoint/state.json records the run's settings) and resume, or choose another directory", dir, ConfigFile, ConfigFile)
		}
		if err == nil {
			if savedSomething(dir) {
				return stored, fmt.Errorf("%s already holds a run (%s): resume it with --resume, or choose another directory", dir, ConfigFile)
			}
			// It failed or was killed before its first checkpoint:
			// nothing of it is lost by starting over.
			r.progress0("%s holds a run that saved no checkpoint: starting over", dir)
			r.oldConfig = true
		}
		return stored, nil
	}
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		if err := r.lockRunDir(); err != nil {
			return stored, err
		}
	}
	stored, diff, err := resumeDiff(dir, cfg)
	if err != nil {
		return stored, err
	}
	if diff != "" {
		return stored, fmt.Errorf("resume %s: the run was configured differently: %s", dir, diff)
	}
	if cfg.Steps != stored.Steps {
		r.stepsWere = stored.Steps
	}
	// Before anything is loaded: the checkpoint must be there, and be
	// this run's, written under config.json's settings.
	identity, err := runIdentity(*cfg)
	if err != nil {
		return stored, err
	}
	if err := checkCheckpointRecord(dir, identity); err != nil {
		return stored, fmt.Errorf("resume: %w", err)
	}
	if err := checkCheckpointSteps(dir, stored); err != nil {
		return stored, err
	}
	return stored, nil
}

// ResumeDiff says how cfg differs from the configuration of the run in dir
// (its config.json), as a resume of it with cfg would be refused for ("":
// it would not be; the thread count and the step count may differ). It reads only
// config.json: the files' hashes are checked when the run resumes.
func ResumeDiff(dir string, cfg Config) (string, error) {
	_, diff, err := resumeDiff(dir, &cfg)
	return diff, err
}

// RecordedDiff says how cfg differs from stored, a run's configuration as
// its config.json records it ("": they agree but for the thread count and
// what Run records itself; unlike ResumeDiff, other steps differ).
func RecordedDiff(stored, cfg Config) string {
	fillRecorded(&cfg, stored)
	return configDiff(stored, cfg, "threads")
}

// resumeDiff loads dir's config.json, fills in cfg's fields that Run
// records itself (the files' hashes) from it, and compares the two.
func resumeDiff(dir string, cfg *Config) (stored Config, diff string, err error) {
	if stored, err = LoadConfig(dir); err != nil {
		return stored, "", fmt.Errorf("resume: %w", err)
	}
	fillRecorded(cfg, stored)
	return stored, configDiff(stored, *cfg, "threads", "steps"), nil
}

// fillRecorded sets cfg's fields that Run records itself (the files'
// hashes and sizes, the data changes) to stored's.
func fillRecorded(cfg *Config, stored Config) {
	cfg.ModelSHA256, cfg.TokenizerSHA256 = stored.ModelSHA256, stored.TokenizerSHA256
	cfg.ChatTemplateSHA256 = stored.ChatTemplateSHA256
	cfg.DataSHA256, cfg.DataSize, cfg.ValidSHA256, cfg.ValidSize = stored.DataSHA256, stored.DataSize, stored.ValidSHA256, stored.ValidSize
	cfg.DataChanges, cfg.StepsChanges = stored.DataChanges, stored.StepsChanges
	cfg.TextEncoding = stored.TextEncoding
}

// runOutputs are the files Run writes at the top of a run directory
// (DST's method adds delta.safetensors); the checkpoint directories are
// wholly its own.
var runOutputs = []string{ConfigFile, MetricsFile, ModelFile, LockFile, "delta.safetensors"}

// checkInputs refuses a run whose model, its external data, or data file
// is one of the files the run writes (the same file by any path).
func (r *runner) checkInputs() error {
	var ins []outpath.Input
	if r.onnxModel != nil {
		ins = outpath.ModelInputs(r.cfg.Model, r.onnxModel)
	}
	ins = append(ins, r.dataInputs()...)
	var outs []string
	for _, name := range runOutputs {
		outs = append(outs, filepath.Join(r.opts.Dir, name))
	}
	for _, d := range []string{checkpointDir, checkpointOld, checkpointTmp, BestDir, bestTmp, bestOld, bestKept} {
		entries, _ := os.ReadDir(filepath.Join(r.opts.Dir, d))
		for _, e := range entries {
			outs = append(outs, filepath.Join(r.opts.Dir, d, e.Name()))
		}
	}
	if err := outpath.CheckAll(outs, ins...); err != nil {
		return fmt.Errorf("%w, which the run writes: choose another run directory", err)
	}
	return nil
}

// savedSomething reports whether a run directory holds a checkpoint, or
// the record of one.
func savedSomething(dir string) bool {
	for _, name := range []string{checkpointDir, checkpointOld, checkpointRecord} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return true
		}
	}
	return false
}

// LockFile is the file a run holds locked (flock) in its directory for as
// long as it runs; it says which process holds it.
const LockFile = ".lock"

// lockRunDir locks the run directory for this run, or fails at once
// naming the process that has it.
func (r *runner) lockRunDir() error {
	path := filepath.Join(r.opts.Dir, LockFile)
	if err := outpath.CheckAll([]string{path}, r.dataInputs()...); err != nil {
		return fmt.Errorf("%w, which the run writes: choose another run directory", err)
	}
	holder := fmt.Sprintf("pid %d (%s, since %s)", os.Getpid(), commandLine(), time.Now().Format(time.DateTime))
	l, err := flock.TryLock(path, holder)
	var held *flock.HeldError
	if errors.As(err, &held) {
		who := "another process"
		if held.Holder != "" {
			who = held.Holder
		}
		return fmt.Errorf("%s is in use by %s: one run at a time may write a run directory", r.opts.Dir, who)
	}
	if err != nil {
		return err
	}
	r.lock = l
	return nil
}

// commandLine is the program and its first argument (dstune train).
func commandLine() string {
	if len(os.Args) == 0 {
		return "dstune"
	}
	cmd := filepath.Base(os.Args[0])
	if len(os.Args) > 1 {
		cmd += " " + os.Args[1]
	}
	return cmd
}

// dataInputs are the data files a run reads.
func (r *runner) dataInputs() []outpath.Input {
	ins := []outpath.Input{{Path: r.cfg.Data, What: "the training data"}}
	if r.cfg.Valid != "" {
		ins = append(ins, outpath.Input{Path: r.cfg.Valid, What: "the validation data"})
	}
	return ins
}

// sourceShape is what the model tells the data: its vocabulary or class
// count (0: unknown) and the batch size and sequence length it fixes (0:
// any).
type sourceShape struct {
	vocab, classes int64
	batch, seqLen  int
}

// openSource makes the graph source: RunOptions.Source, or the ONNX model
// of the configuration (whose hash a resumed run checks).
func (r *runner) openSource(stored Config) (*ir.Model, sourceShape, error) {
	cfg := &r.cfg
	if r.opts.Source != nil {
		r.src = r.opts.Source
		return nil, sourceShape{}, nil
	}
	sum, err := FileSHA256(cfg.Model)
	if err != nil {
		return nil, sourceShape{}, err
	}
	if r.opts.Resume && sum != stored.ModelSHA256 {
		return nil, sourceShape{}, fmt.Errorf("resume: %s has changed since the run started (sha256 %s, config.json says %s)", cfg.Model, sum, stored.ModelSHA256)
	}
	cfg.ModelSHA256 = sum
	if r.onnxModel, err = onnx.ReadFile(cfg.Model); err != nil {
		return nil, sourceShape{}, err
	}
	model, err := ir.NewModel(r.onnxModel)
	if err != nil {
		return nil, sourceShape{}, fmt.Errorf("%s: %w", cfg.Model, err)
	}
	// The model holds copies of the weights now: the file's pages of
	// them, read by the import, need not stay resident (DST's seed reads
	// those it uses again, the fine-tuned model's writing the rest).
	for _, it := range r.onnxModel.Graph.Initializers {
		pages.PageOut(it.Raw)
	}
	// Half-precision checkpoints train float32 master copies, computing
	// in float32; the results are written back in the model's dtype.
	model = model.Float32Compute()
	r.halfParams = model.HalfParams()
	ms, err := NewModelSource(model, ModelSourceOptions{Task: cfg.Task, Trainable: cfg.Trainable})
	if err != nil {
		return nil, sourceShape{}, fmt.Errorf("%s: %w", cfg.Model, err)
	}
	r.src = ms
	return model, sourceShape{vocab: ms.VocabSize, classes: ms.NumClasses, batch: ms.Batch, seqLen: ms.SeqLen}, nil
}

// loadData reads the training and validation data (checking a resumed
// run's against the hashes config.json records) and fixes the batch
// shape: T is --max-len, the model's fixed length, or the longest example.
func (r *runner) loadData(shape sourceShape) (*Dataset, error) {
	cfg := &r.cfg
	if err := r.checkDataFile("data", cfg.Data, &cfg.DataSHA256, &cfg.DataSize); err != nil {
		return nil, err
	}
	if cfg.Valid != "" {
		if err := r.checkDataFile("valid", cfg.Valid, &cfg.ValidSHA256, &cfg.ValidSize); err != nil {
			return nil, err
		}
	}
	dataOpts := DataOptions{Task: cfg.Task, VocabSize: shape.vocab, NumClasses: shape.classes}
	if cfg.TextEncoding >= TextJoined {
		dataOpts.JoinText, dataOpts.MaxLen = true, cfg.MaxLen
		if shape.seqLen > 0 && (cfg.MaxLen == 0 || cfg.MaxLen > shape.seqLen) {
			dataOpts.MaxLen = shape.seqLen // checked against --max-len below
		}
	}
	if cfg.Tokenizer != "" {
		sum, err := FileSHA256(cfg.Tokenizer)
		if err != nil {
			return nil, fmt.Errorf("tokenizer: %w", err)
		}
		if r.opts.Resume && sum != cfg.TokenizerSHA256 {
			return nil, fmt.Errorf("resume: %s has changed since the run started (sha256 %s, config.json says %s)", cfg.Tokenizer, sum, cfg.TokenizerSHA256)
		}
		cfg.TokenizerSHA256 = sum
		tok, err := tokenizer.Load(cfg.Tokenizer)
		if err != nil {
			return nil, err
		}
		warning, err := tok.FitsModel(int(shape.vocab))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.Tokenizer, err)
		}
		if warning != "" {
			r.progress0("warning: %s: %s", cfg.Tokenizer, warning)
		}
		dataOpts.Tokenizer = tok
	}
	var err error
	if dataOpts.Chat, dataOpts.ChatMissing, err = loadChatTemplate(cfg); err != nil {
		return nil, err
	}
	ds, err := LoadJSONL(cfg.Data, dataOpts)
	if err != nil {
		return nil, err
	}
	r.warnIgnored(ds)
	T := cfg.MaxLen
	longest := longestExample(ds)
	if cfg.Valid != "" {
		if r.valid, err = LoadJSONL(cfg.Valid, dataOpts); err != nil {
			return nil, err
		}
		r.warnIgnored(r.valid)
		if err := CheckValidationData(r.valid, cfg.Metric); err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.Valid, err)
		}
		longest = max(longest, longestExample(r.valid))
	}
	if err := r.recordChatTemplate(dataOpts.Chat, ds, r.valid); err != nil {
		return nil, err
	}
	if T == 0 {
		T = longest
	}
	if err := r.checkTargets(ds, T); err != nil {
		return nil, err
	}
	if shape.seqLen > 0 {
		if cfg.MaxLen > 0 && cfg.MaxLen != shape.seqLen {
			return nil, fmt.Errorf("%s takes sequences of exactly %d tokens, --max-len is %d", cfg.Model, shape.seqLen, cfg.MaxLen)
		}
		T = shape.seqLen
	}
	if shape.batch > 0 && cfg.Batch != shape.batch {
		// Batches are always --batch rows (filler rows pad the last).
		return nil, fmt.Errorf("%s takes batches of exactly %d sequences (its inputs fix the batch size), --batch is %d: train with --batch %d, or export the model with a dynamic batch axis", cfg.Model, shape.batch, cfg.Batch, shape.batch)
	}
	if shape.vocab > 0 && cfg.PadID >= shape.vocab {
		// Else the embedding's Gather fails, blamed on the batch's shape.
		return nil, fmt.Errorf("--pad-id %d is outside the model's vocabulary [0, %d)", cfg.PadID, shape.vocab)
	}
	if ms := sourceAs[*ModelSource](r.src); ms != nil {
		if w := ms.PadWarning(cfg.PadID); w != "" {
			r.progress0("warning: %s: %s", cfg.Model, w)
		}
	}
	r.batchOpts = BatchOptions{BatchSize: cfg.Batch, MaxLen: T, FixedLen: true, PadID: cfg.PadID}
	return ds, nil
}

// warnIgnored says which fields of ds's rows no example form reads.
func (r *runner) warnIgnored(ds *Dataset) {
	if note := ignoredFieldsNote(ds); note != "" {
		r.progress0("note: %s", note)
	}
}

// ignoredFieldsNote names the fields of ds's rows no example form reads
// ("" when there are none).
func ignoredFieldsNote(ds *Dataset) string {
	f := ds.IgnoredFields()
	if f == "" {
		return ""
	}
	return fmt.Sprintf("%s: fields %s are not read (an example is \"tokens\" with \"loss_mask\" or \"label\", \"text\", \"prompt\" and \"completion\", or \"messages\" with \"tools\")", ds.Name, f)
}

// checkTargets refuses lm data in which no example has a target that
// counts in the loss (every loss_mask 0 past the first token, or
// truncated away), which would train on weight decay alone, and says how
// many examples have none.
func (r *runner) checkTargets(ds *Dataset, T int) error {
	if ds.Task != TaskLM {
		return nil
	}
	none := 0
	for i := range ds.Len() {
		ex := ds.Example(i)
		n := len(ex.Tokens)
		if T > 0 {
			n = min(n, T)
		}
		counts := false
		for t := 1; t < n && !counts; t++ {
			counts = ex.LossMask == nil || ex.LossMask[t]
		}
		if !counts {
			none++
		}
	}
	switch {
	case none == ds.Len():
		return fmt.Errorf("%s: no example has a token that counts in the loss (every example has one token, or its loss_mask is 0 after the first token, or --max-len cuts the marked ones off): training would only decay the weights", ds.Name)
	case none > 0:
		r.progress0("%s: %d of %d examples have no token that counts in the loss (one token, loss_mask 0 after the first token, or cut by --max-len): their rows train nothing", ds.Name, none, ds.Len())
	}
	return nil
}

// checkDataFile hashes a data file (which, data or valid) into *sum and
// *size; a resumed run's must match what config.json recorded, unless
// RunOptions.AllowDataChange, which records the change.
func (r *runner) checkDataFile(which, path string, sum *string, size *int64) error {
	got, n, err := fileSHA256Size(path)
	if err != nil {
		return err
	}
	was, wasSize := *sum, *size
	*sum, *size = got, n
	if !r.opts.Resume || was == "" || (was == got && wasSize == n) {
		return nil
	}
	if !r.opts.AllowDataChange {
		return fmt.Errorf("resume: %s has changed since the run started (sha256 %s, %d bytes; config.json records %s, %d bytes): the run would go on with other data than it started with; restore the file, or give --allow-data-change to continue on the new data (config.json records the change)",
			path, got, n, was, wasSize)
	}
	r.dataChanged = true
	r.cfg.DataChanges = append(r.cfg.DataChanges, DataChange{File: which, Was: was, SHA256: got}) // Step: set when the checkpoint is read
	return nil
}

// newEngine makes the run's method and its engine on the configured
// backend.
func (r *runner) newEngine(model *ir.Model) error {
	cfg := &r.cfg
	env := MethodEnv{Config: *cfg, Model: model}
	if fg, ok := r.src.(interface{ ForwardGraph() (*ir.Graph, error) }); ok {
		env.ForwardGraph = fg.ForwardGraph
	}
	var err error
	if r.method, err = newRunMethod(env); err != nil {
		return err
	}
	if sm, ok := r.method.(SourceMethod); ok {
		if r.src, err = sm.Source(r.src); err != nil {
			return err
		}
	}
	backend, err := accel.OpenWith(cfg.Backend, r.opts.BackendOptions)
	if err != nil {
		return err
	}
	r.shared = &sharedSource{GraphSource: r.src}
	if r.onnxModel != nil && cfg.Method == MethodDST {
		r.seeds = newSeedStore(r.onnxModel, r.src.Params(), r.opts.Dir, r.opts.SeedFileMin)
		r.shared.seeds = r.seeds
	}
	precision, _ := accel.ParsePrecision(cfg.Precision) // checked by Config.Check
	opts := accel.Options{Threads: cfg.Threads, Precision: precision}
	r.engine, err = NewEngineWith(r.shared, backend, update.Program{Optimizer: cfg.Optimizer, MaxGradNorm: cfg.MaxGradNorm}, r.method, opts)
	r.shared.seeds = nil // the trainer holds what it uses
	if err != nil {
		return err
	}
	// Making the method read every weight of the file again (the base
	// model's hash): those pages need not stay resident either, the
	// seeds' own the trainer drops after reading them.
	if r.onnxModel != nil {
		for _, it := range r.onnxModel.Graph.Initializers {
			if !r.seeds.inPlace(it) {
				pages.PageOut(it.Raw)
			}
		}
	}
	if pr, ok := backend.(accel.PeakReporter); ok {
		r.peakGFLOPS = pr.PeakGFLOPS(opts)
	}
	return nil
}

// startData restores a resumed run's checkpoint and starts the batches
// where it left off; a new run is probed with its first batch and its
// config.json written.
func (r *runner) startData(ds *Dataset) error {
	cfg, dir := &r.cfg, r.opts.Dir
	var err error
	if r.identity, err = runIdentity(*cfg); err != nil {
		return err
	}
	pos := Position{}
	if r.opts.Resume && HasCheckpoint(dir) {
		st, p, err := ReadCheckpoint(dir, r.engine.Params(), cfg.Optimizer, r.method.Name())
		if err != nil {
			return err
		}
		if err := r.engine.Restore(st); err != nil {
			return fmt.Errorf("checkpoint in %s: %w", dir, err)
		}
		pos, r.lastCkpt = p, st.Step
		if err := r.afterRestore(); err != nil {
			return err
		}
		if r.opts.AfterRestore != nil {
			if err := r.opts.AfterRestore(st.Step); err != nil {
				return err
			}
		}
	}
	if r.dataChanged {
		for i := range cfg.DataChanges {
			if cfg.DataChanges[i].Step == 0 {
				cfg.DataChanges[i].Step = r.lastCkpt
			}
		}
	}
	// A change recorded at the checkpoint's step has not taken effect
	// yet when the resume that recorded it stopped before its next
	// checkpoint (every later checkpoint is of a later step; a complete
	// run takes no more).
	pending := r.lastCkpt > 0 && r.lastCkpt < cfg.Steps && slices.ContainsFunc(cfg.DataChanges, func(c DataChange) bool { return c.Step == r.lastCkpt })
	if r.dataChanged || pending {
		// The data order belongs to the data: the new data starts an
		// epoch of its own.
		if pos != (Position{}) {
			pos = Position{Epoch: pos.Epoch + 1}
		}
		if r.dataChanged {
			r.progress0("the data changed since the run started: continuing with epoch %d of the new data (recorded in config.json)", pos.Epoch)
		} else {
			r.progress0("the data change config.json records at step %d had not taken effect (the resume that made it stopped before its next checkpoint): continuing with epoch %d of the new data", r.lastCkpt, pos.Epoch)
		}
	}
	if r.train, err = NewTrainBatches(ds, r.batchOpts, cfg.Seed, pos); err != nil {
		return err
	}
	if r.opts.Resume {
		if at := r.engine.Step(); r.stepsWere == 0 && at > cfg.Steps {
			return fmt.Errorf("resume: %s asks for %d steps, but the run's checkpoint is of step %d: config.json was edited since (a resume may raise the steps with --steps)", filepath.Join(dir, ConfigFile), cfg.Steps, at)
		}
		if r.stepsWere != 0 {
			if err := r.changeSteps(); err != nil {
				return err
			}
		}
		if r.dataChanged || r.stepsWere != 0 {
			return writeJSONFile(filepath.Join(dir, ConfigFile), cfg)
		}
		return nil
	}
	// One forward pass before the run is recorded: a model that cannot
	// take these batches (too long for its positions, say) fails here
	// with a hint, not at step 1 of a run that then has to be resumed.
	probe, err := NewTrainBatches(ds, r.batchOpts, cfg.Seed, Position{})
	if err != nil {
		return err
	}
	var b Batch
	probe.Next(&b)
	if _, err := r.engine.EvalLoss(&b); err != nil {
		return r.cannotTake(BatchShape{b.B, b.T}, err)
	}
	return writeJSONFile(filepath.Join(dir, ConfigFile), cfg)
}

// changeSteps records a resume's new step count, which must not be below
// the step the run is at.
func (r *runner) changeSteps() error {
	cfg, at := &r.cfg, r.engine.Step()
	if cfg.Steps <= at {
		// Equal: the step would be the last without its validation and
		// outputs, which a run's last step gets.
		return fmt.Errorf("resume: --steps %d: the run is at step %d already (config.json asks for %d): give more steps than it has taken", cfg.Steps, at, r.stepsWere)
	}
	cfg.StepsChanges = append(cfg.StepsChanges, StepsChange{Step: at, Was: r.stepsWere, Steps: cfg.Steps})
	how := ""
	if cfg.Schedule.Name != ScheduleConstant {
		how = fmt.Sprintf("; the %s schedule now decays over %d steps: step %d takes %.3g of the learning rate", cfg.Schedule.Name, cfg.Steps, at+1, cfg.Schedule.Factor(at+1, cfg.Steps))
		if at < r.stepsWere {
			how += fmt.Sprintf(", not %.3g", cfg.Schedule.Factor(at+1, r.stepsWere))
		}
	}
	r.progress0("continuing from step %d to step %d, not %d (recorded in config.json)%s", at, cfg.Steps, r.stepsWere, how)
	return nil
}

// batchHint says where the batch shape came from when err is the model's
// not importing for it.
func (r *runner) batchHint(err error) error {
	var bse *BatchShapeError
	if !errors.As(err, &bse) {
		return err
	}
	return r.cannotTake(bse.Shape, bse.Err)
}

// cannotTake is the error of a model that cannot take batches of shape.
func (r *runner) cannotTake(shape BatchShape, err error) error {
	hint := "the longest example"
	if r.cfg.MaxLen > 0 {
		hint = "--max-len"
	}
	what, fix := fmt.Sprintf("%d×%d tokens", shape.B, shape.T), "--max-len truncates examples"
	if r.cfg.Method == MethodPrompt {
		// The model sees the soft prompt's positions too.
		var o struct {
			Length int `json:"length"` // peft.PromptOptions's
		}
		if json.Unmarshal(r.cfg.Prompt, &o) == nil && o.Length > 0 {
			what += fmt.Sprintf(" after a soft prompt of %d", o.Length)
			fix += ", --prompt-len sets the prompt's"
		}
	}
	return fmt.Errorf("%s cannot take batches of %s (%s; %s): %w", r.cfg.Model, what, hint, fix, err)
}

// afterRestore makes the run directory agree with the restored
// checkpoint where a crash may have left it behind: a checkpoint found
// only as checkpoint.old (a crash mid-swap) is put back in its place, the
// old one or a half-written one beside it removed, checkpoint.json and
// the method's run files (DST's delta, written after the checkpoint)
// written again from it.
func (r *runner) afterRestore() error {
	dir := r.opts.Dir
	if err := settleSwap(dir, filepath.Join(dir, checkpointTmp), filepath.Join(dir, checkpointDir), filepath.Join(dir, checkpointOld)); err != nil {
		return err
	}
	if err := recordCheckpoint(dir); err != nil {
		return err
	}
	if w, ok := r.method.(RunFileWriter); ok {
		st, err := r.engine.State()
		if err != nil {
			return err
		}
		return w.WriteRunFiles(dir, st)
	}
	return nil
}

// openMetrics opens metrics.jsonl for appending, without the records of
// steps after the restored checkpoint.
func (r *runner) openMetrics() error {
	dir := r.opts.Dir
	// A run restarting from step 0 (stopped before its first checkpoint)
	// writes its step-0 validation record again: drop the old one too.
	keep := r.engine.Step()
	if keep == 0 {
		keep = -1
	}
	if err := truncateMetrics(filepath.Join(dir, MetricsFile), keep); err != nil {
		return err
	}
	var err error
	if r.metrics, err = os.OpenFile(filepath.Join(dir, MetricsFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o666); err != nil {
		return err
	}
	r.metricsW = bufio.NewWriter(r.metrics)
	r.progress = newProgress(r.opts.Progress, r.opts.Terminal, r.opts.LogEvery, r.cfg.Steps)
	return nil
}

func longestExample(ds *Dataset) int {
	n := 0
	for i := range ds.Len() {
		n = max(n, ds.starts[i+1]-ds.starts[i])
	}
	return n
}

// FileSHA256 is the sha256 of a file's bytes, in hex, as config.json
// records the model's, the data's and the tokenizer's (a FIFO or a
// device is refused, not read).
func FileSHA256(path string) (string, error) {
	sum, _, err := fileSHA256Size(path)
	return sum, err
}

// fileSHA256Size is a file's sha256 and size.
func fileSHA256Size(path string) (string, int64, error) {
	f, _, err := regfile.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("%s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// progress0 prints a message before the progress display starts (to the
// same writer).
func (r *runner) progress0(format string, args ...any) {
	if r.opts.Progress != nil {
		fmt.Fprintf(r.opts.Progress, format+"\n", args...)
	}
}

// configDiff lists the fields (by JSON name) in which two configurations
// differ, "" when they agree, leaving out the fields named by ignore.
func configDiff(a, b Config, ignore ...string) string {
	var diffs []string
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	var ma, mb map[string]any
	json.Unmarshal(ja, &ma)
	json.Unmarshal(jb, &mb)
	for _, k := range ignore {
		delete(ma, k)
		delete(mb, k)
	}
	for k, va := range ma {
		if vb, ok := mb[k]; !ok {
			da, _ := json.Marshal(va)
			diffs = append(diffs, fmt.Sprintf("%s is %s in config.json, unset (the default) now", k, da))
		} else if !reflect.DeepEqual(va, vb) {
			da, _ := json.Marshal(va)
			db, _ := json.Marshal(vb)
			diffs = append(diffs, fmt.Sprintf("%s is %s in config.json, %s now", k, da, db))
		}
	}
	for k, vb := range mb {
		if _, ok := ma[k]; !ok {
			db, _ := json.Marshal(vb)
			diffs = append(diffs, fmt.Sprintf("%s is unset (the default) in config.json, %s now", k, db))
		}
	}
	slices.Sort(diffs)
	return strings.Join(diffs, "; ")
}

// truncateMetrics drops records of steps after step (written after the
// checkpoint a run resumes from), so that metrics.jsonl describes the
// steps the parameters went through, once each.
func truncateMetrics(path string, step int64) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var kept []byte
	for line := range bytes.Lines(data) {
		var rec struct {
			Step *int64 `json:"step"`
		}
		if json.Unmarshal(line, &rec) != nil || rec.Step == nil {
			continue // a line cut short by a crash
		}
		if *rec.Step <= step {
			kept = append(kept, line...)
		}
	}
	if len(kept) == len(data) {
		return nil
	}
	return atomicfile.Write(path, kept)
}

// metricsRecord is one line of metrics.jsonl; a method adds fields.
type metricsRecord struct {
	Step         int64    `json:"step"`
	Epoch        int64    `json:"epoch"`
	Loss         *float64 `json:"loss,omitempty"`
	LR           *float64 `json:"lr,omitempty"`
	GradNorm     *float64 `json:"grad_norm,omitempty"`
	StepMS       float64  `json:"step_ms,omitempty"`
	ComputeMS    float64  `json:"compute_ms,omitempty"`
	UpdateMS     float64  `json:"update_ms,omitempty"`
	Tokens       int      `json:"tokens,omitempty"`
	TokensPerSec float64  `json:"tokens_per_s,omitempty"`
	MFU          float64  `json:"mfu,omitempty"`
	ValidLoss    *float64 `json:"valid_loss,omitempty"`
	// The validation metric (Config.Metric), with the validation loss.
	TokenAccuracy *float64 `json:"token_accuracy,omitempty"`
	ExactMatch    *float64 `json:"exact_match,omitempty"`
	Accuracy      *float64 `json:"accuracy,omitempty"`
}

// metricValue is rec's value of the validation metric (nil: none).
func (rec *metricsRecord) metricValue(metric string) *float64 {
	switch metric {
	case MetricTokenAccuracy:
		return rec.TokenAccuracy
	case MetricExactMatch:
		return rec.ExactMatch
	case MetricAccuracy:
		return rec.Accuracy
	}
	return nil
}

// setValidation puts a validation's results into rec.
func (rec *metricsRecord) setValidation(metric string, v validation) {
	rec.ValidLoss = &v.loss
	switch metric {
	case MetricTokenAccuracy:
		rec.TokenAccuracy = &v.metric
	case MetricExactMatch:
		rec.ExactMatch = &v.metric
	case MetricAccuracy:
		rec.Accuracy = &v.metric
	}
}

// validation is what one validation pass measured: the loss and the
// metric (NaN when Config.Metric is the loss alone).
type validation struct{ loss, metric float64 }

// writeMetrics writes rec and the method's fields (a value encoding as a
// JSON object, or nil) as one line.
func (r *runner) writeMetrics(rec metricsRecord, extra any) error {
	line, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if extra != nil {
		more, err := json.Marshal(extra)
		if err != nil {
			return err
		}
		if len(more) < 2 || more[0] != '{' {
			return fmt.Errorf("train: the %s method's metrics are not a JSON object", r.method.Name())
		}
		if len(more) > 2 {
			line = append(append(line[:len(line)-1], ','), more[1:]...)
		}
	}
	r.metricsW.Write(line)
	r.metricsW.WriteByte('\n')
	return r.metricsW.Flush()
}

func (r *runner) evaluate() (validation, error) {
	// The pass is not interrupted: a stopping run validates its last step.
	res, err := Evaluate(context.Background(), r.engine, r.valid, r.batchOpts, r.cfg.Metric)
	if err != nil {
		return validation{metric: math.NaN()}, fmt.Errorf("validation: %w", err)
	}
	return validation{loss: res.Loss, metric: res.Metric}, nil
}

// state is the engine's state for a checkpoint, refusing one that
// holds NaN or ±Inf: the last good checkpoint is never replaced by it.
func (r *runner) state() (*EngineState, error) {
	// A view: nothing changes the state until the checkpoint is written
	// (validation only reads the parameters), and a copy would hold the
	// parameters and the optimizer state twice meanwhile.
	st, err := r.engine.stateView()
	if err != nil {
		return nil, err
	}
	if err := checkStateFinite(st, r.engine.Params()); err != nil {
		return nil, err
	}
	return st, nil
}

func (r *runner) checkpoint(st *EngineState) error {
	if err := writeCheckpoint(r.opts.Dir, r.engine.Params(), st, r.train.Position(), r.cfg.Optimizer.Name, r.method.Name(), r.identity, r.cfg.Steps); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if w, ok := r.method.(RunFileWriter); ok {
		if err := w.WriteRunFiles(r.opts.Dir, st); err != nil {
			return err
		}
	}
	r.lastCkpt = st.Step
	return r.dropKeptBest(st.Step)
}

// stopped adds to a step's error what was kept of the run: a step whose
// loss, gradients or new state are not finite is not saved.
func (r *runner) stopped(err error) error {
	var le *LossError
	var ne *NonFiniteError
	if !errors.As(err, &le) && !errors.As(err, &ne) {
		return err
	}
	where := "no checkpoint was written yet"
	if r.lastCkpt > 0 {
		where = fmt.Sprintf("the last good checkpoint (step %d) is kept in %s", r.lastCkpt, filepath.Join(r.opts.Dir, checkpointDir))
	}
	return fmt.Errorf("%w; %s", err, where)
}

func (r *runner) loop(ctx context.Context) error {
	cfg := &r.cfg
	res := r.res
	res.Step = r.engine.Step()
	if s, ok := r.method.(Summarizer); ok {
		r.progress.message("%s", s.Summary())
	}
	if r.valid != nil && res.Step == 0 {
		v, err := r.evaluate()
		if err != nil {
			return err
		}
		if err := r.checkValidLoss(0, v); err != nil {
			return err
		}
		res.InitialValidLoss, res.ValidLoss = v.loss, v.loss
		res.InitialValidMetric, res.ValidMetric = v.metric, v.metric
		var rec metricsRecord
		rec.setValidation(cfg.Metric, v)
		if err := r.writeMetrics(rec, nil); err != nil {
			return err
		}
		r.progress.validated(0, cfg.Metric, v)
	}
	if r.best.exhausted(cfg, res.Step) {
		res.StoppedEarly = r.stoppedEarly() // a resume of a run that stopped early: nothing to train
	}
	batches := make([]Batch, max(1, cfg.GradAccum))
	bs := make([]*Batch, len(batches))
	for i := range batches {
		bs[i] = &batches[i]
	}
	start := time.Now()
	r.lastCkptTime = start
	first := res.Step
	for step := res.Step + 1; step <= cfg.Steps && res.StoppedEarly == ""; step++ {
		if ctx.Err() != nil {
			r.progress.done()
			if r.lastCkpt < res.Step {
				st, err := r.state()
				if err != nil {
					return r.stopped(err)
				}
				if err := r.checkpoint(st); err != nil {
					return err
				}
			}
			if res.Step == 0 {
				return r.interruptedEarly()
			}
			return fmt.Errorf("%w after step %d; checkpoint saved: continue with dstune train --resume %s", ErrInterrupted, res.Step, r.opts.Dir)
		}
		pos := r.train.Position()
		for _, b := range bs {
			r.train.Next(b)
		}
		lrScale := cfg.Schedule.Factor(step, cfg.Steps)
		stepStart := time.Now()
		stats, err := r.engine.TrainStepOver(ctx, bs, lrScale)
		if err != nil && ctx.Err() != nil && errors.Is(err, context.Cause(ctx)) {
			// Interrupted between the batches of an accumulated step:
			// the step is drawn again when the run resumes.
			r.train.Seek(pos)
			step--
			continue
		}
		if err != nil {
			r.progress.done()
			return r.stopped(err)
		}
		if stats.Targets == 0 {
			r.emptyBatches++
			if r.emptyBatches <= 3 {
				r.progress.message("step %d: no token of the %s counts in the loss (one-token examples, or loss_mask 0): the step only decays the weights%s",
					step, map[bool]string{false: "batch", true: "step's batches"}[len(bs) > 1], map[bool]string{true: " (further such steps are not reported)"}[r.emptyBatches == 3])
			}
		}
		elapsed := time.Since(stepStart)
		if r.opts.OnStep != nil {
			if err := r.opts.OnStep(r.engine, bs[0], stats, elapsed); err != nil {
				r.progress.done()
				return err
			}
		}
		// A checkpoint step's state is checked before anything of the
		// step is written.
		var st *EngineState
		if step == cfg.Steps || r.checkpointDue(step) {
			if st, err = r.state(); err != nil {
				r.progress.done()
				return r.stopped(err)
			}
		}
		res.Step, res.Loss = step, stats.Loss
		tokens := 0
		for _, b := range bs {
			for _, m := range b.AttentionMask {
				tokens += int(m)
			}
		}
		lr := cfg.Optimizer.LR(update.StepInfo{Step: step, LRScale: lrScale})
		rec := metricsRecord{Step: step, Epoch: pos.Epoch, Loss: &stats.Loss, LR: &lr, GradNorm: &stats.GradNorm,
			StepMS: ms(elapsed), ComputeMS: ms(stats.Compute), UpdateMS: ms(stats.Update),
			Tokens: tokens, TokensPerSec: float64(tokens) / elapsed.Seconds(), MFU: r.mfu(bs, elapsed)}
		if r.valid != nil && (step == cfg.Steps || (cfg.EvalEvery > 0 && step%cfg.EvalEvery == 0)) {
			v, err := r.evaluate()
			if err != nil {
				return err
			}
			if err := r.checkValidLoss(step, v); err != nil {
				return err
			}
			rec.setValidation(cfg.Metric, v)
			res.ValidLoss, res.ValidMetric = v.loss, v.metric
			r.progress.validated(step, cfg.Metric, v)
			if r.best.note(step, v) && cfg.KeepBest {
				// A checkpoint step's state, checked already, serves both.
				if err := r.writeBest(step, v, st); err != nil {
					r.progress.done()
					return fmt.Errorf("best validation: %w", err)
				}
			}
			if r.best.exhausted(cfg, step) {
				res.StoppedEarly = r.stoppedEarly()
				if st == nil {
					if st, err = r.state(); err != nil {
						r.progress.done()
						return r.stopped(err)
					}
				}
			}
		}
		if err := r.writeMetrics(rec, r.method.Metrics(step, r.engine.LastResult())); err != nil {
			return err
		}
		if st != nil {
			if err := r.checkpoint(st); err != nil {
				return err
			}
			r.lastCkptTime = time.Now()
		}
		done := step - first
		eta := time.Duration(float64(time.Since(start)) / float64(done) * float64(cfg.Steps-step))
		r.progress.step(step, stats.Loss, rec.TokensPerSec, rec.MFU, eta)
		crashpoint.Hit("train.step")
		if r.opts.MemoryReport && step == first+1 {
			m, err := r.memoryReport(BatchShape{bs[0].B, bs[0].T})
			if err != nil {
				return err
			}
			for _, line := range m.Lines() {
				r.progress.message("%s", line)
			}
		}
		if r.opts.AfterStep != nil {
			if err := r.opts.AfterStep(step); err != nil {
				r.progress.done()
				return err
			}
		}
		if res.StoppedEarly != "" {
			r.progress.done()
			r.progress.message("stopped early after step %d of %d: %s", step, cfg.Steps, res.StoppedEarly)
		}
	}
	r.progress.done()
	res.BestStep = r.best.step
	if r.opts.MemoryReport {
		if _, peak := sysmem.RSS(); peak > 0 {
			r.progress.message("peak resident memory of the run: %s", sysmem.Format(peak))
		}
	}
	if r.onnxModel != nil && r.method.Name() == MethodFull {
		path := filepath.Join(r.opts.Dir, ModelFile)
		if err := r.writeModel(path); err != nil {
			return err
		}
		res.ModelFile = path
	}
	return nil
}

// mfu is the model FLOPs utilization of a step over bs that took d: the
// training graphs' matrix-product FLOPs over d, as a share of the
// backend's peak for the run's precision (0 when the backend does not
// know its peak).
func (r *runner) mfu(bs []*Batch, d time.Duration) float64 {
	if r.peakGFLOPS <= 0 || d <= 0 {
		return 0
	}
	var flops float64
	for _, b := range bs {
		shape := BatchShape{b.B, b.T}
		f, ok := r.stepFLOPs[shape]
		if !ok {
			g, err := r.engine.TrainingGraph(shape)
			if err != nil {
				return 0
			}
			f = GraphProductFLOPs(g)
			r.stepFLOPs[shape] = f
		}
		flops += f
	}
	return flops / d.Seconds() / 1e9 / r.peakGFLOPS
}

// checkpointDue reports whether the cadence asks for a checkpoint after
// step (the last step and interruptions always write one).
func (r *runner) checkpointDue(step int64) bool {
	cfg := &r.cfg
	if cfg.CheckpointEvery > 0 && step%cfg.CheckpointEvery == 0 {
		return true
	}
	return cfg.CheckpointMinutes > 0 && time.Since(r.lastCkptTime).Minutes() >= cfg.CheckpointMinutes
}

// storedBytes encodes trained float32 values in the dtype the model
// stores them in: float32, or float16/bfloat16 rounded to nearest even.
func storedBytes(v []float32, half ir.DType) []byte {
	if half == ir.InvalidDType {
		return float32Bytes(v)
	}
	return ir.Convert(ir.FromFloat32s(ir.Shape{len(v)}, v), half).Bytes()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// writeModel writes the fine-tuned model: the original file with the
// trained initializers' bytes replaced (every other byte identical), or,
// when they are not stored inside the file, a re-encoded model.
func (r *runner) writeModel(path string) error {
	// The trained values in place where the backend shows them so
	// (nothing trains meanwhile), not a copy of the model's weights.
	st, err := r.engine.stateView()
	if err != nil {
		return err
	}
	values := map[string][]byte{}
	for _, p := range r.engine.Params() {
		v, ok := st.Params[p.Name]
		if !ok {
			return fmt.Errorf("fine-tuned model: no values for parameter %q", p.Name)
		}
		values[p.Name] = storedBytes(v, r.halfParams[p.Name])
	}
	err = onnx.PatchFile(r.cfg.Model, path, r.onnxModel, values)
	if err == nil {
		return nil
	}
	for i, t := range r.onnxModel.Graph.Initializers {
		if v, ok := values[t.Name]; ok {
			nt, err := onnx.NewTensor(t.Name, t.DataType, t.Dims, v)
			if err != nil {
				return fmt.Errorf("fine-tuned model: %w", err)
			}
			r.onnxModel.Graph.Initializers[i] = nt
		}
	}
	if err := onnx.WriteFile(path, r.onnxModel, onnx.WriteOptions{}); err != nil {
		return fmt.Errorf("fine-tuned model: %w", err)
	}
	return nil
}
