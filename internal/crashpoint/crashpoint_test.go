package crashpoint

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The test binary runs itself with a point armed: the third hit kills it.
func TestHitKills(t *testing.T) {
	if os.Getenv("CRASHPOINT_CHILD") == "1" {
		for i := range 5 {
			Hit("other")
			Hit2("atomicfile.filled", "b.txt")
			Hit2("atomicfile.filled", "a.txt")
			os.Stdout.WriteString("hit " + string(rune('1'+i)) + "\n")
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHitKills$")
	cmd.Env = append(os.Environ(), "CRASHPOINT_CHILD=1", Env+"=atomicfile.filled:a.txt:3")
	out, err := cmd.Output()
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if got := string(out); got != "hit 1\nhit 2\n" {
		t.Errorf("the child got to %q before it was killed, want two rounds", got)
	}
}
