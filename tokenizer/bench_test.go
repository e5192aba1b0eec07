package tokenizer

import (
	"strings"
	"testing"
)

// benchTexts are an English text (the reference paragraphs in English,
// repeated to 1 MB) and the mixed reference strings (many scripts, emoji,
// random code points).
func benchTexts(b *testing.B) map[string]string {
	strs, err := refStrings()
	if err != nil {
		b.Fatal(err)
	}
	var english []string
	for _, s := range strs {
		if strings.HasPrefix(s, "Once upon") || strings.HasPrefix(s, "Tokenizers turn") || strings.HasPrefix(s, "I'm sure") ||
			strings.HasPrefix(s, "Visit https") || strings.HasPrefix(s, "The price") || strings.HasPrefix(s, "func main") {
			english = append(english, s)
		}
	}
	en := strings.Join(english, "\n")
	return map[string]string{
		"english": strings.Repeat(en+"\n", 1<<20/len(en)+1),
		"mixed":   strings.Join(strs, "\n"),
	}
}

func BenchmarkEncode(b *testing.B) {
	texts := benchTexts(b)
	names := []string{"llama2", "llama3", "qwen3", "gemma3", "gpt4o", "bert", "unigram"}
	for _, text := range []string{"english", "mixed"} {
		for _, name := range names {
			b.Run("text="+text+"/tokenizer="+name, func(b *testing.B) {
				tk := refTokenizer(b, name)
				benchEncode(b, tk, texts[text])
			})
		}
		b.Run("text="+text+"/tokenizer=llama2.c", func(b *testing.B) {
			benchEncode(b, loadStories260K(b), texts[text])
		})
	}
}

func benchEncode(b *testing.B, tk *Tokenizer, text string) {
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	n, iters := 0, 0
	cpu := cpuSeconds()
	for b.Loop() {
		n = len(tk.Encode(text, false))
		iters++
	}
	reportCPUThroughput(b, cpu, iters*len(text))
	b.ReportMetric(float64(len(text))/float64(n), "bytes/token")
}

// reportCPUThroughput adds MB per CPU second (all threads, the garbage
// collector's included), which a busy machine disturbs less than MB/s.
func reportCPUThroughput(b *testing.B, start float64, bytes int) {
	if used := cpuSeconds() - start; used > 0 && start > 0 {
		b.ReportMetric(float64(bytes)/1e6/used, "MB/cpu-s")
	}
}

func BenchmarkDecode(b *testing.B) {
	texts := benchTexts(b)
	for _, name := range []string{"llama2", "llama3", "bert", "unigram"} {
		b.Run("tokenizer="+name, func(b *testing.B) {
			tk := refTokenizer(b, name)
			ids := tk.Encode(texts["english"], false)
			b.SetBytes(int64(len(texts["english"])))
			b.ReportAllocs()
			iters, cpu := 0, cpuSeconds()
			for b.Loop() {
				tk.Decode(ids, false)
				iters++
			}
			reportCPUThroughput(b, cpu, iters*len(texts["english"]))
		})
	}
}

func BenchmarkLoad(b *testing.B) {
	for _, name := range []string{"llama3", "gemma3"} {
		b.Run("tokenizer="+name, func(b *testing.B) {
			data := tokenizerJSON(b, name)
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := ParseHF(name, data, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
