package train

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// IsTerminal reports whether w is a terminal (a character device that
// answers the terminal ioctl), where progress redraws one line.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isTerminal(f.Fd())
}

// progress reports training progress: on a terminal one line redrawn in
// place (at most every redrawEvery), otherwise a plain line every `every`
// steps and at the last one. Messages (validation, checkpoints) print on
// their own lines in both modes.
type progress struct {
	w        io.Writer
	terminal bool
	every    int64
	total    int64
	drawn    bool // a redrawable line is on screen
	lastDraw time.Time
	line     string
	// metric is the last validation metric ("exact match 85.0 %"),
	// shown on every step line after it ("" when there is none).
	metric string
}

const redrawEvery = 100 * time.Millisecond

func newProgress(w io.Writer, terminal bool, every, total int64) *progress {
	if every < 1 {
		every = 1
	}
	return &progress{w: w, terminal: terminal, every: every, total: total}
}

// stepLine formats one step: step, loss, the last validation metric
// (when there is one), tokens/s, model FLOPs utilization (left out when
// 0: unknown), ETA.
func stepLine(step, total int64, loss float64, metric string, tokensPerSec, mfu float64, eta time.Duration) string {
	if metric != "" {
		metric = "  " + metric
	}
	util := ""
	if mfu > 0 {
		util = fmt.Sprintf("  MFU %.0f%%", 100*mfu)
	}
	return fmt.Sprintf("step %d/%d  loss %.4f%s  %s tok/s%s  ETA %s", step, total, loss, metric, siCount(tokensPerSec), util, formatETA(eta))
}

func (p *progress) step(step int64, loss, tokensPerSec, mfu float64, eta time.Duration) {
	if p.w == nil {
		return
	}
	line := stepLine(step, p.total, loss, p.metric, tokensPerSec, mfu, eta)
	if p.terminal {
		p.line = line
		if now := time.Now(); step == p.total || now.Sub(p.lastDraw) >= redrawEvery {
			p.lastDraw = now
			fmt.Fprintf(p.w, "\r\x1b[K%s", line)
			p.drawn = true
		}
		return
	}
	if step%p.every == 0 || step == p.total {
		fmt.Fprintln(p.w, line)
	}
}

// message prints a line of its own (above the progress line on a
// terminal, which is then redrawn).
func (p *progress) message(format string, args ...any) {
	if p.w == nil {
		return
	}
	msg := strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	if p.terminal && p.drawn {
		fmt.Fprintf(p.w, "\r\x1b[K%s\n%s", msg, p.line)
		return
	}
	fmt.Fprintln(p.w, msg)
}

// done ends the progress line on a terminal.
func (p *progress) done() {
	if p.w != nil && p.terminal && p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

func siCount(x float64) string {
	switch {
	case x >= 1e6:
		return fmt.Sprintf("%.2fM", x/1e6)
	case x >= 1e4:
		return fmt.Sprintf("%.1fk", x/1e3)
	}
	return fmt.Sprintf("%.0f", x)
}

func formatETA(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	d = d.Round(time.Second)
	h, m, s := int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60
	switch {
	case h > 0:
		return fmt.Sprintf("%dh%02dm", h, m)
	case m > 0:
		return fmt.Sprintf("%dm%02ds", m, s)
	}
	return fmt.Sprintf("%ds", s)
}
