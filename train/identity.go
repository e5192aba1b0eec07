package train

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// identityIgnored are the fields of config.json that a run may change
// while it goes on: the thread count (the same bits on any), the data
// files' hashes and sizes with the record of their changes
// (--allow-data-change), and the step count with the record of its
// changes (--steps given with --resume).
var identityIgnored = []string{"threads", "data_sha256", "data_size", "valid_sha256", "valid_size", "data_changes", "steps", "steps_changes"}

// runIdentity is a run's configuration as every checkpoint records it:
// config.json's fields but identityIgnored, as compact JSON with sorted
// keys (the same bytes for the same settings, so that the checkpoints of
// a resumed run and of an uninterrupted one are identical).
func runIdentity(cfg Config) (json.RawMessage, error) {
	data, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	for _, k := range identityIgnored {
		delete(m, k)
	}
	return json.Marshal(m)
}

// identitySHA256 is the sha256 of a recorded identity's compact bytes
// ("" for none).
func identitySHA256(identity json.RawMessage) string {
	if len(identity) == 0 {
		return ""
	}
	var b bytes.Buffer
	if err := json.Compact(&b, identity); err != nil {
		b.Reset()
		b.Write(identity)
	}
	sum := sha256.Sum256(b.Bytes())
	return hex.EncodeToString(sum[:])
}

// settingDiff is a setting (a JSON path such as optimizer.adamw.lr) whose
// values in config.json and in a checkpoint differ.
type settingDiff struct {
	path             string
	config, recorded string // JSON values; "unset" when absent
}

// checkIdentity compares the configuration a checkpoint (of the run in
// run, found in dir) was written under with the run's identity now, and
// says what differs and, by the record checkpoint.json kept of the run's
// identity (recordedSHA256; "": none), whether config.json or the
// checkpoint is the one that changed.
func checkIdentity(run, dir string, info CheckpointInfo, recordedSHA256 string, identity json.RawMessage) error {
	if len(info.Config) == 0 || len(identity) == 0 {
		return nil // a checkpoint written before it recorded its run
	}
	diffs, err := identityDiff(identity, info.Config)
	if err != nil {
		return fmt.Errorf("checkpoint %s: state.json: its configuration: %w", dir, err)
	}
	if len(diffs) == 0 {
		return nil
	}
	config := filepath.Join(run, ConfigFile)
	var list []string
	for _, d := range diffs {
		list = append(list, fmt.Sprintf("%s is %s in config.json, %s in the checkpoint", d.path, d.config, d.recorded))
	}
	what := strings.Join(list, "; ")
	switch {
	case recordedSHA256 != "" && recordedSHA256 == identitySHA256(info.Config):
		// checkpoint.json agrees with the checkpoint: config.json was
		// edited, or both came from another run together.
		return fmt.Errorf("%s differs from the settings the checkpoint (step %d) and %s record: %s; config.json was edited since the run started (a run keeps its settings, as a flag given with --resume that differs from config.json is refused), or the checkpoint and %s were copied from another run: put back the one that changed, or start a new run in another directory",
			config, info.Step, checkpointRecord, what, checkpointRecord)
	case recordedSHA256 != "" && recordedSHA256 == identitySHA256(identity):
		return fmt.Errorf("checkpoint %s (step %d) comes from another run: it was written under other settings (%s), and %s records this run's: put the run's own checkpoint back, or start a new run in another directory",
			dir, info.Step, what, checkpointRecord)
	}
	return fmt.Errorf("checkpoint %s (step %d) was written under other settings than %s holds (%s): config.json was edited since the run started, or the checkpoint comes from another run; restore the one that changed, or start a new run in another directory",
		dir, info.Step, config, what)
}

// identityDiff lists the settings in which two identities differ, by
// their values: numbers equal as numbers, and a setting absent from one
// equal to its zero value in the other (an identity recorded before a
// setting existed).
func identityDiff(config, recorded json.RawMessage) ([]settingDiff, error) {
	decode := func(raw json.RawMessage) (any, error) {
		var v any
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		err := dec.Decode(&v)
		return v, err
	}
	a, err := decode(config)
	if err != nil {
		return nil, err
	}
	b, err := decode(recorded)
	if err != nil {
		return nil, err
	}
	// A checkpoint written before a setting became changeable records it.
	for _, v := range []any{a, b} {
		if m, ok := v.(map[string]any); ok {
			for _, k := range identityIgnored {
				delete(m, k)
			}
		}
	}
	var out []settingDiff
	diffJSON("", a, b, &out)
	return out, nil
}

// absent stands for a key an object does not have.
type absent struct{}

func diffJSON(path string, a, b any, out *[]settingDiff) {
	ma, aObj := a.(map[string]any)
	mb, bObj := b.(map[string]any)
	if aObj && bObj {
		var keys []string
		for k := range ma {
			keys = append(keys, k)
		}
		for k := range mb {
			if _, ok := ma[k]; !ok {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			va, ok := ma[k]
			if !ok {
				va = absent{}
			}
			vb, ok := mb[k]
			if !ok {
				vb = absent{}
			}
			at := k
			if path != "" {
				at = path + "." + k
			}
			diffJSON(at, va, vb, out)
		}
		return
	}
	if sameJSONValue(a, b) {
		return
	}
	*out = append(*out, settingDiff{path: path, config: jsonText(a), recorded: jsonText(b)})
}

// sameJSONValue compares two decoded JSON values (numbers as
// json.Number).
func sameJSONValue(a, b any) bool {
	if isZeroJSON(a) && isZeroJSON(b) {
		return true
	}
	na, aNum := a.(json.Number)
	nb, bNum := b.(json.Number)
	if aNum && bNum {
		if na == nb {
			return true
		}
		if ia, err := strconv.ParseInt(string(na), 10, 64); err == nil {
			ib, err := strconv.ParseInt(string(nb), 10, 64)
			return err == nil && ia == ib
		}
		if ua, err := strconv.ParseUint(string(na), 10, 64); err == nil {
			ub, err := strconv.ParseUint(string(nb), 10, 64)
			return err == nil && ua == ub
		}
		fa, errA := strconv.ParseFloat(string(na), 64)
		fb, errB := strconv.ParseFloat(string(nb), 64)
		return errA == nil && errB == nil && fa == fb
	}
	return reflect.DeepEqual(a, b)
}

// isZeroJSON reports whether a decoded JSON value is absent or its type's
// zero (null, 0, "", false, [], {}).
func isZeroJSON(v any) bool {
	switch v := v.(type) {
	case absent, nil:
		return true
	case json.Number:
		f, err := strconv.ParseFloat(string(v), 64)
		return err == nil && f == 0
	case string:
		return v == ""
	case bool:
		return !v
	case []any:
		return len(v) == 0
	case map[string]any:
		return len(v) == 0
	}
	return false
}

// jsonText is a decoded JSON value as a message shows it.
func jsonText(v any) string {
	if _, ok := v.(absent); ok {
		return "unset"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
