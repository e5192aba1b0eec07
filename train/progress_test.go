package train

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestProgressPlainLines(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out, false, 5, 12)
	for step := int64(1); step <= 12; step++ {
		p.step(step, 2.5, 12345, 0, time.Duration(12-step)*time.Second)
		if step == 6 {
			p.message("step 6: validation loss %.4f", 1.25)
		}
	}
	p.done()
	want := "step 5/12  loss 2.5000  12.3k tok/s  ETA 7s\n" +
		"step 6: validation loss 1.2500\n" +
		"step 10/12  loss 2.5000  12.3k tok/s  ETA 2s\n" +
		"step 12/12  loss 2.5000  12.3k tok/s  ETA 0s\n"
	if out.String() != want {
		t.Errorf("plain progress:\n%q\nwant\n%q", out.String(), want)
	}
}

func TestProgressTerminalRedrawsOneLine(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out, true, 1, 3)
	p.step(1, 3, 900, 0.5, 90*time.Second)
	p.step(2, 2, 900, 0.5, 45*time.Second) // within redrawEvery: not drawn
	p.message("checkpoint written")
	p.step(3, 1, 2e6, 0.625, 0) // the last step is always drawn
	p.done()
	got := out.String()
	want := "\r\x1b[Kstep 1/3  loss 3.0000  900 tok/s  MFU 50%  ETA 1m30s" +
		"\r\x1b[Kcheckpoint written\nstep 2/3  loss 2.0000  900 tok/s  MFU 50%  ETA 45s" +
		"\r\x1b[Kstep 3/3  loss 1.0000  2.00M tok/s  MFU 62%  ETA 0s\n"
	if got != want {
		t.Errorf("terminal progress:\n%q\nwant\n%q", got, want)
	}
	if strings.Count(got, "\n") != 2 {
		t.Errorf("want the message and the final newline only")
	}
	if formatETA(3*time.Hour+5*time.Minute) != "3h05m" {
		t.Errorf("formatETA(3h5m) = %s", formatETA(3*time.Hour+5*time.Minute))
	}
}

// TestProgressShowsTheMetric: after a validation with a metric, the step
// lines carry its last value.
func TestProgressShowsTheMetric(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out, false, 1, 3)
	p.step(1, 2.5, 100, 0, 2*time.Second)
	p.validated(1, MetricExactMatch, validation{loss: 1.25, metric: 0.5})
	p.step(2, 2, 100, 0, time.Second)
	p.done()
	want := "step 1/3  loss 2.5000  100 tok/s  ETA 2s\n" +
		"step 1: validation loss 1.2500, exact match 50.0 %\n" +
		"step 2/3  loss 2.0000  exact match 50.0 %  100 tok/s  ETA 1s\n"
	if out.String() != want {
		t.Errorf("progress:\n%q\nwant\n%q", out.String(), want)
	}
}
