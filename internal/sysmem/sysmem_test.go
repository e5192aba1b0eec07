package sysmem

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

func TestTotal(t *testing.T) {
	n := Total()
	if (runtime.GOOS == "linux" || runtime.GOOS == "darwin") && n < 1<<26 {
		t.Errorf("Total() = %d bytes", n)
	}
	if d := Default(); d > n || d < n/2 {
		t.Errorf("Default() = %d of %d", d, n)
	}
	t.Logf("memory: %s, default budget %s", Format(n), Format(Default()))
}

// TestAddressSpaceLimit: under ulimit -v (RLIMIT_AS) lower than the
// machine's memory, Total is what the limit leaves of the address space:
// less than the limit, by what the Go runtime has reserved (about 1 GiB),
// and more than half of it (checked in a child process: Total is computed
// once).
func TestAddressSpaceLimit(t *testing.T) {
	if os.Getenv("SYSMEM_TEST_CHILD") == "1" {
		os.Stdout.WriteString("total=" + strconv.FormatInt(Total(), 10) + "\n")
		return
	}
	if runtime.GOOS != "linux" {
		t.Skip("ulimit -v is checked on Linux")
	}
	const limitKiB = 8 << 20 // 8 GiB
	if physical() <= limitKiB<<10 || (cgroupLimit() > 0 && cgroupLimit() <= limitKiB<<10) {
		t.Skip("this machine has no more than 8 GiB: the limit would not be the lowest")
	}
	cmd := exec.Command("sh", "-c", "ulimit -v "+strconv.Itoa(limitKiB)+" && exec \"$0\" -test.run '^TestAddressSpaceLimit$' -test.v", os.Args[0])
	cmd.Env = append(os.Environ(), "SYSMEM_TEST_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	_, after, ok := strings.Cut(string(out), "total=")
	total, err := strconv.ParseInt(strings.Fields(after + " ")[0], 10, 64)
	if !ok || err != nil || total >= limitKiB<<10 || total < limitKiB<<9 {
		t.Errorf("under ulimit -v %d KiB the child says %q", limitKiB, out)
	}
}

func TestParseSize(t *testing.T) {
	for s, want := range map[string]int64{"1": 1, "512MiB": 512 << 20, "8G": 8 << 30, "1.5GiB": 3 << 29, "2GB": 2e9, " 64 KiB ": 64 << 10, "100B": 100} {
		if got, err := ParseSize(s); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "GiB", "-1G", "0", "1 parsec", "1e3", "nan", "9999999TiB"} {
		if got, err := ParseSize(s); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", s, got)
		}
	}
	for n, want := range map[int64]string{100: "100 B", 1536: "1.5 KiB", 3 << 29: "1.5 GiB", 640 << 20: "640.0 MiB"} {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestRSS: touching 64 MiB raises the resident set and its peak by about
// as much.
func TestRSS(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the current resident set is read on Linux only")
	}
	cur0, peak0 := RSS()
	if cur0 <= 0 || peak0 < cur0 {
		t.Fatalf("RSS() = %d, %d", cur0, peak0)
	}
	buf := make([]byte, 64<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	cur1, peak1 := RSS()
	if cur1-cur0 < 60<<20 || peak1 < cur1 {
		t.Errorf("after touching 64 MiB: RSS %s → %s, peak %s → %s", Format(cur0), Format(cur1), Format(peak0), Format(peak1))
	}
	runtime.KeepAlive(buf)
}
