package ir

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/png"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/onnx"
)

// decodeWith imports an ImageDecoder of the given pixel format on data.
func decodeWith(data []byte, format string) (*Tensor, error) {
	m := buildModel(20, []*onnx.ValueInfo{valueInfo("data", onnx.Uint8, len(data))}, nil,
		[]*onnx.Node{node("ImageDecoder", []string{"data"}, []string{"y"}, stringAttr("pixel_format", format))}, "y")
	model, err := NewModel(m)
	if err != nil {
		return nil, err
	}
	if vi := model.ValueInputs(); !slices.Equal(vi, []string{"data"}) {
		return nil, errors.New("the encoded stream must be a value input")
	}
	t := NewTensor(Uint8, Shape{len(data)})
	copy(t.Uint8s(), data)
	g, err := model.Specialize(Bindings{Values: map[string]*Tensor{"data": t}})
	if err != nil {
		return nil, err
	}
	out, err := Interpret(g, nil)
	if err != nil {
		return nil, err
	}
	res, err := g.Assemble(out)
	if err != nil {
		return nil, err
	}
	return res[0].Tensor, nil
}

// TestPNM decodes a 2×2 image written in every Netpbm variant; the
// samples are scaled from maxval to 8 bits.
func TestPNM(t *testing.T) {
	rgb := []uint8{255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255}
	gray := []uint8{0, 85, 170, 255}
	bits := []uint8{0, 255, 255, 0} // P1/P4: 1 is black
	for _, tc := range []struct {
		name string
		file []byte
		want []uint8 // RGB
	}{
		{"P3", []byte("P3\n# a comment\n2 2\n255\n255 0 0  0 255 0\n0 0 255  255 255 255\n"), rgb},
		{"P6", append([]byte("P6 2 2 255\n"), rgb...), rgb},
		{"P6 16-bit", append([]byte("P6 2 2 65535\n"), widen(rgb)...), rgb},
		{"P2", []byte("P2 2 2 3\n0 1\n2 3\n"), grayRGB(gray)},
		{"P5", append([]byte("P5\n2 2\n255\n"), gray...), grayRGB(gray)},
		{"P1", []byte("P1\n2 2\n1 0\n0 1\n"), grayRGB(bits)},
		{"P4", []byte("P4\n2 2\n\x80\x40"), grayRGB(bits)},
	} {
		got, err := decodeWith(tc.file, "RGB")
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !got.Shape().Equal(Shape{2, 2, 3}) || !slices.Equal(got.Uint8s(), tc.want) {
			t.Errorf("%s: %v %v, want %v", tc.name, got.Shape(), got.Uint8s(), tc.want)
		}
	}
	for _, tc := range []struct{ name, file, want string }{
		{"huge header", "P6 100000 100000 255\n\x00\x00", "pixels for"},
		{"truncated", "P6 2 2 255\n\x00\x00", "truncated data"},
		{"bad header", "P6 2 x 255\n", "unexpected byte"},
		{"zero size", "P5 0 2 255\n", "size 0×2"},
		{"not an image", "hello, world", "image format"},
		{"JPEG 2000", "\xff\x4f\xff\x51\x00\x2f", "JPEG 2000 images"},
	} {
		if _, err := decodeWith([]byte(tc.file), "RGB"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func widen(v []uint8) []uint8 {
	var out []uint8
	for _, x := range v {
		out = append(out, x, x) // x·257 in 16 bits: the same level scaled
	}
	return out
}

func grayRGB(g []uint8) []uint8 {
	var out []uint8
	for _, v := range g {
		out = append(out, v, v, v)
	}
	return out
}

// TestImagePixelFormats: BGR reverses the channels, Grayscale is the
// rounded ITU-R 601 luma, on a PNG written here.
func TestImagePixelFormats(t *testing.T) {
	img := image.NewNRGBA(image.Rect(0, 0, 3, 1))
	colors := []color.NRGBA{{200, 10, 30, 255}, {0, 255, 0, 255}, {17, 34, 51, 255}}
	for i, c := range colors {
		img.SetNRGBA(i, 0, c)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	bgr, err := decodeWith(buf.Bytes(), "BGR")
	if err != nil {
		t.Fatal(err)
	}
	gray, err := decodeWith(buf.Bytes(), "Grayscale")
	if err != nil {
		t.Fatal(err)
	}
	if !gray.Shape().Equal(Shape{1, 3, 1}) {
		t.Fatalf("grayscale shape %v", gray.Shape())
	}
	for i, c := range colors {
		if got := bgr.Uint8s()[3*i : 3*i+3]; !slices.Equal(got, []uint8{c.B, c.G, c.R}) {
			t.Errorf("pixel %d BGR %v, want %v", i, got, []uint8{c.B, c.G, c.R})
		}
		luma := 0.299*float64(c.R) + 0.587*float64(c.G) + 0.114*float64(c.B)
		if d := float64(gray.Uint8s()[i]) - luma; d < -0.5 || d > 0.5 {
			t.Errorf("pixel %d gray %d, luma %.2f", i, gray.Uint8s()[i], luma)
		}
	}
}

// TestImageDecoderMatchesReference compares with the ONNX suite's
// expected pixels (decoded by Pillow with libjpeg and libwebp): WebP
// exactly; JPEG within 2 levels, the difference between Go's and
// libjpeg's inverse DCTs, on at most 5 % of the values (Go's own
// nearest-sample chroma would be off by up to 64 on this image).
func TestImageDecoderMatchesReference(t *testing.T) {
	for _, tc := range []struct {
		test, format string
		maxDiff      int
	}{
		{"test_image_decoder_decode_webp_rgb", "RGB", 0},
		{"test_image_decoder_decode_jpeg_rgb", "RGB", 2},
		{"test_image_decoder_decode_jpeg_bgr", "BGR", 2},
		{"test_image_decoder_decode_jpeg_grayscale", "Grayscale", 2},
	} {
		dir := sharedtest.Path(t, "onnx-backend", "node", tc.test, "test_data_set_0")
		in, err := onnx.ReadTensorFile(filepath.Join(dir, "input_0.pb"))
		if err != nil {
			t.Fatal(err)
		}
		out, err := onnx.ReadTensorFile(filepath.Join(dir, "output_0.pb"))
		if err != nil {
			t.Fatal(err)
		}
		data, _ := in.Bytes()
		want, _ := out.Bytes()
		got, err := decodeWith(data, tc.format)
		if err != nil {
			t.Fatalf("%s: %v", tc.test, err)
		}
		off, worst := 0, 0
		for i, v := range got.Uint8s() {
			d := max(int(v)-int(want[i]), int(want[i])-int(v))
			worst = max(worst, d)
			if d > 0 {
				off++
			}
		}
		if worst > tc.maxDiff || off*20 > len(want) {
			t.Errorf("%s: %d of %d values differ, by up to %d", tc.test, off, len(want), worst)
		}
		t.Logf("%s: %d of %d values differ from the reference, by up to %d", tc.test, off, len(want), worst)
	}
}
