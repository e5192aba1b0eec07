package ir

import (
	"bufio"
	"bytes"
	"fmt"
	"image"
	"image/color"
	_ "image/gif" // decoders ImageDecoder accepts, registered with image.Decode
	_ "image/jpeg"
	_ "image/png"
	"io"
	"strconv"

	_ "golang.org/x/image/bmp"
	_ "golang.org/x/image/tiff"
	_ "golang.org/x/image/webp"

	"github.com/dstune/dstune/onnx"
)

// ImageDecoder decodes an encoded image (a uint8 tensor of the file's
// bytes) at import, where the output's shape [H, W, C] becomes known: the
// encoded stream is a static operand. JPEG, PNG and GIF are decoded by
// Go's standard library, BMP, TIFF and WebP by golang.org/x/image, PNM
// (P1 to P6) here. Go's JPEG decoder is not libjpeg: its pixels may
// differ from a reference decoded with libjpeg by a few levels. JPEG 2000
// is not supported.

func init() {
	registerOp("", "ImageDecoder", importImageDecoder)
	registerStaticOperands("", "ImageDecoder", 0)
}

// maxImagePixels bounds the pixels of a decoded image (the header is read
// first, so a small file claiming a huge image is refused before any
// allocation).
const maxImagePixels = 1 << 26

func importImageDecoder(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	data, err := im.constTensor(in, 0, "encoded_stream")
	if err != nil {
		return nil, err
	}
	if data.dtype != Uint8 || len(data.shape) != 1 {
		return nil, fmt.Errorf("encoded_stream is %v, want 1-D uint8", data)
	}
	format, err := n.AttrString("pixel_format", "RGB")
	if err != nil {
		return nil, err
	}
	if format != "RGB" && format != "BGR" && format != "Grayscale" {
		return nil, fmt.Errorf("pixel_format %q, want RGB, BGR or Grayscale", format)
	}
	img, kind, err := decodeImage(data.data)
	if err != nil {
		return nil, err
	}
	return []*Value{im.constant(imagePixels(img, kind, format))}, nil
}

// decodeImage decodes buf and names its format.
func decodeImage(buf []byte) (image.Image, string, error) {
	if len(buf) >= 2 && buf[0] == 'P' && buf[1] >= '1' && buf[1] <= '6' {
		img, err := decodePNM(bytes.NewReader(buf), len(buf))
		return img, "pnm", err
	}
	cfg, kind, err := image.DecodeConfig(bytes.NewReader(buf))
	if err != nil {
		if bytes.HasPrefix(buf, []byte("\x00\x00\x00\x0cjP  ")) || bytes.HasPrefix(buf, []byte("\xff\x4f\xff\x51")) {
			return nil, "", fmt.Errorf("%w: JPEG 2000 images", ErrNotSupported)
		}
		return nil, "", fmt.Errorf("%w: image format (%w)", ErrNotSupported, err)
	}
	if cfg.Width < 0 || cfg.Height < 0 || int64(cfg.Width)*int64(cfg.Height) > maxImagePixels {
		return nil, "", fmt.Errorf("%s image of %d×%d pixels exceeds the %d-pixel limit", kind, cfg.Width, cfg.Height, maxImagePixels)
	}
	img, _, err := image.Decode(bytes.NewReader(buf))
	if err != nil {
		return nil, "", fmt.Errorf("decoding the %s image: %w", kind, err)
	}
	return img, kind, nil
}

// imagePixels lays img out as [H, W, 3] (RGB or BGR) or [H, W, 1]
// (Grayscale: the ITU-R 601 luma of the 8-bit RGB values, rounded, as
// common imaging libraries compute it; a gray image's own levels). The
// chroma of JPEG and lossy WebP images is upsampled and converted to RGB
// as libjpeg and libwebp do by default (see jpegRGB, webpRGB), not by
// Go's nearest-sample conversion, so that the pixels match what those
// libraries decode.
func imagePixels(img image.Image, kind, format string) *Tensor {
	bounds := img.Bounds()
	h, w := bounds.Dy(), bounds.Dx()
	channels := 3
	if format == "Grayscale" {
		channels = 1
	}
	out := NewTensor(Uint8, Shape{h, w, channels})
	px := out.Uint8s()
	if gray, ok := img.(*image.Gray); ok && channels == 1 {
		for y := range h {
			copy(px[y*w:(y+1)*w], gray.Pix[y*gray.Stride:y*gray.Stride+w])
		}
		return out
	}
	rgb := func(x, y int) (uint8, uint8, uint8) {
		c := color.NRGBAModel.Convert(img.At(bounds.Min.X+x, bounds.Min.Y+y)).(color.NRGBA)
		return c.R, c.G, c.B
	}
	yc, _ := img.(*image.YCbCr)
	if yca, ok := img.(*image.NYCbCrA); ok {
		yc = &yca.YCbCr
	}
	switch {
	case yc != nil && kind == "jpeg":
		rgb = jpegRGB(yc)
	case yc != nil && kind == "webp":
		rgb = webpRGB(yc)
	}
	for y := range h {
		for x := range w {
			at := (y*w + x) * channels
			r, g, b := rgb(x, y)
			switch format {
			case "RGB":
				px[at], px[at+1], px[at+2] = r, g, b
			case "BGR":
				px[at], px[at+1], px[at+2] = b, g, r
			default:
				px[at] = uint8((uint32(r)*19595 + uint32(g)*38470 + uint32(b)*7471 + 1<<15) >> 16)
			}
		}
	}
	return out
}

// chroma is one chroma plane of a YCbCr image, read at chroma
// coordinates clamped to the plane (edges replicate), or, for unusual
// subsampling ratios, at the sample nearest to a pixel.
type chroma struct {
	yc     *image.YCbCr
	plane  []uint8
	cw, ch int
}

func chromaPlanes(yc *image.YCbCr) (cb, cr chroma) {
	w, h := yc.Rect.Dx(), yc.Rect.Dy()
	cw, ch := w, h
	switch yc.SubsampleRatio {
	case image.YCbCrSubsampleRatio422:
		cw = (w + 1) / 2
	case image.YCbCrSubsampleRatio420:
		cw, ch = (w+1)/2, (h+1)/2
	}
	return chroma{yc, yc.Cb, cw, ch}, chroma{yc, yc.Cr, cw, ch}
}

func (c chroma) at(x, y int) int {
	return int(c.plane[min(max(y, 0), c.ch-1)*c.yc.CStride+min(max(x, 0), c.cw-1)])
}

func (c chroma) nearest(x, y int) int {
	return int(c.plane[c.yc.COffset(c.yc.Rect.Min.X+x, c.yc.Rect.Min.Y+y)])
}

// jpegRGB converts a decoded JPEG as libjpeg does by default: "fancy"
// chroma upsampling (a triangle filter: 3/4 of the nearer chroma sample
// and 1/4 of the next, vertically then horizontally for 4:2:0, with
// libjpeg's rounding) and libjpeg's fixed-point YCbCr to RGB conversion
// (16 fraction bits). Subsampling ratios other than 4:4:4, 4:2:2 and
// 4:2:0 use the nearest chroma sample.
func jpegRGB(yc *image.YCbCr) func(x, y int) (uint8, uint8, uint8) {
	cb, cr := chromaPlanes(yc)
	up := func(c chroma, x, y int) int {
		switch yc.SubsampleRatio {
		case image.YCbCrSubsampleRatio444:
			return c.at(x, y)
		case image.YCbCrSubsampleRatio422:
			cx := x / 2
			switch {
			case x%2 == 0 && cx == 0, x%2 == 1 && cx == c.cw-1:
				return c.at(cx, y)
			case x%2 == 0:
				return (3*c.at(cx, y) + c.at(cx-1, y) + 1) >> 2
			}
			return (3*c.at(cx, y) + c.at(cx+1, y) + 2) >> 2
		case image.YCbCrSubsampleRatio420:
			cx, cy := x/2, y/2
			far := cy - 1 // the chroma row on this output row's side
			if y%2 == 1 {
				far = cy + 1
			}
			col := func(i int) int { return 3*c.at(i, cy) + c.at(i, far) }
			switch {
			case x%2 == 0 && cx == 0:
				return (4*col(cx) + 8) >> 4
			case x%2 == 0:
				return (3*col(cx) + col(cx-1) + 8) >> 4
			case cx == c.cw-1:
				return (4*col(cx) + 7) >> 4
			}
			return (3*col(cx) + col(cx+1) + 7) >> 4
		}
		return c.nearest(x, y)
	}
	fix := func(v float64) int { return int(v*(1<<16) + 0.5) }
	crR, cbB, cbG, crG := fix(1.40200), fix(1.77200), fix(0.34414), fix(0.71414)
	return func(x, y int) (uint8, uint8, uint8) {
		lum := int(yc.Y[y*yc.YStride+x])
		u, v := up(cb, x, y)-128, up(cr, x, y)-128
		r := lum + (crR*v+1<<15)>>16
		g := lum + (-cbG*u-crG*v+1<<15)>>16
		b := lum + (cbB*u+1<<15)>>16
		return clamp8(r), clamp8(g), clamp8(b)
	}
}

// webpRGB converts a decoded lossy WebP image as libwebp does by default:
// bilinear chroma upsampling of 4:2:0 (weights 9/16, 3/16, 3/16, 1/16,
// rounded in libwebp's two steps: the average with the diagonal, then
// its mean with the nearest sample) and libwebp's fixed-point BT.601
// conversion of limited-range YUV.
func webpRGB(yc *image.YCbCr) func(x, y int) (uint8, uint8, uint8) {
	cb, cr := chromaPlanes(yc)
	up := func(c chroma, x, y int) int {
		if yc.SubsampleRatio != image.YCbCrSubsampleRatio420 {
			return c.nearest(x, y)
		}
		cx, cy := x/2, y/2
		fx, fy := cx-1, cy-1
		if x%2 == 1 {
			fx = cx + 1
		}
		if y%2 == 1 {
			fy = cy + 1
		}
		if fx < 0 || fx >= c.cw {
			fx = cx
		}
		if fy < 0 || fy >= c.ch {
			fy = cy
		}
		near, side, vert, diag := c.at(cx, cy), c.at(fx, cy), c.at(cx, fy), c.at(fx, fy)
		mid := (near + side + vert + diag + 8 + 2*(side+vert)) >> 3
		return (mid + near) >> 1
	}
	// libwebp's coefficients have 14 fraction bits, its sums 6.
	mulHi := func(v, c int) int { return (v * c) >> 8 }
	clip := func(v int) uint8 { return clamp8(v >> 6) }
	return func(x, y int) (uint8, uint8, uint8) {
		lum := mulHi(int(yc.Y[y*yc.YStride+x]), 19077)
		u, v := up(cb, x, y), up(cr, x, y)
		r := clip(lum + mulHi(v, 26149) - 14234)
		g := clip(lum - mulHi(u, 6419) - mulHi(v, 13320) + 8708)
		b := clip(lum + mulHi(u, 33050) - 17685)
		return r, g, b
	}
}

func clamp8(v int) uint8 { return uint8(min(max(v, 0), 255)) }

// ---------------------------------------------------------------- PNM

// pnmHeader is a Netpbm header: the magic number (P1 to P6), the size and
// the largest sample value (1 for bitmaps).
type pnmHeader struct {
	magic         byte
	width, height int
	maxVal        int
}

// readPNMHeader reads the header fields: white space separated decimal
// numbers, # comments to the end of the line, one white space byte after
// the last field.
func readPNMHeader(r *bufio.Reader) (pnmHeader, error) {
	var h pnmHeader
	magic := make([]byte, 2)
	if _, err := io.ReadFull(r, magic); err != nil || magic[0] != 'P' || magic[1] < '1' || magic[1] > '6' {
		return h, fmt.Errorf("pnm: bad magic number")
	}
	h.magic = magic[1]
	fields := []*int{&h.width, &h.height, &h.maxVal}
	if h.magic == '1' || h.magic == '4' {
		fields = fields[:2]
		h.maxVal = 1
	}
	for _, f := range fields {
		v, err := pnmNumber(r)
		if err != nil {
			return h, err
		}
		*f = v
	}
	if h.width <= 0 || h.height <= 0 || h.maxVal <= 0 || h.maxVal > 65535 {
		return h, fmt.Errorf("pnm: size %d×%d, maximum %d", h.width, h.height, h.maxVal)
	}
	return h, nil
}

// pnmNumber reads one header number, skipping white space and comments;
// the white space byte after it is consumed.
func pnmNumber(r *bufio.Reader) (int, error) {
	var digits []byte
	for {
		c, err := r.ReadByte()
		if err != nil {
			if len(digits) > 0 && err == io.EOF {
				break
			}
			return 0, fmt.Errorf("pnm: truncated header")
		}
		switch {
		case c == '#' && len(digits) == 0:
			if _, err := r.ReadString('\n'); err != nil {
				return 0, fmt.Errorf("pnm: truncated header")
			}
		case c >= '0' && c <= '9':
			if len(digits) > 9 {
				return 0, fmt.Errorf("pnm: header number too long")
			}
			digits = append(digits, c)
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f':
			if len(digits) > 0 {
				return strconv.Atoi(string(digits))
			}
		default:
			return 0, fmt.Errorf("pnm: unexpected byte %q in the header", c)
		}
	}
	return strconv.Atoi(string(digits))
}

// decodePNM decodes the Netpbm formats: P1/P4 bitmaps (1 is black), P2/P5
// gray maps, P3/P6 pixel maps, ASCII or binary; samples are scaled from
// maxVal to 8 bits. size is the encoded size: no format stores more than 8
// pixels a byte, so a header claiming more is refused before allocating.
func decodePNM(r io.Reader, size int) (image.Image, error) {
	br := bufio.NewReader(r)
	h, err := readPNMHeader(br)
	if err != nil {
		return nil, err
	}
	if pixels := int64(h.width) * int64(h.height); pixels > maxImagePixels || pixels > 8*int64(size) {
		return nil, fmt.Errorf("pnm: %d×%d pixels for %d bytes", h.width, h.height, size)
	}
	channels := 1
	if h.magic == '3' || h.magic == '6' {
		channels = 3
	}
	samples := make([]int, h.width*h.height*channels)
	switch h.magic {
	case '1', '2', '3':
		for i := range samples {
			if h.magic == '1' {
				if samples[i], err = pnmBit(br); err != nil {
					return nil, err
				}
				continue
			}
			if samples[i], err = pnmNumber(br); err != nil {
				return nil, err
			}
		}
	case '4':
		rowBytes := (h.width + 7) / 8
		row := make([]byte, rowBytes)
		for y := range h.height {
			if _, err := io.ReadFull(br, row); err != nil {
				return nil, fmt.Errorf("pnm: truncated data")
			}
			for x := range h.width {
				samples[y*h.width+x] = int(row[x/8]>>(7-uint(x%8))) & 1
			}
		}
	default: // '5', '6'
		width := 1
		if h.maxVal > 255 {
			width = 2
		}
		buf := make([]byte, len(samples)*width)
		if _, err := io.ReadFull(br, buf); err != nil {
			return nil, fmt.Errorf("pnm: truncated data")
		}
		for i := range samples {
			if width == 2 {
				samples[i] = int(buf[2*i])<<8 | int(buf[2*i+1])
			} else {
				samples[i] = int(buf[i])
			}
		}
	}
	scale := func(v int) uint8 {
		if h.magic == '1' || h.magic == '4' {
			return uint8(255 * (1 - v)) // 1 is black
		}
		return uint8((min(v, h.maxVal)*255 + h.maxVal/2) / h.maxVal)
	}
	rect := image.Rect(0, 0, h.width, h.height)
	if channels == 1 {
		img := image.NewGray(rect)
		for i, v := range samples {
			img.Pix[i] = scale(v)
		}
		return img, nil
	}
	img := image.NewRGBA(rect)
	for i := range h.width * h.height {
		img.Pix[4*i], img.Pix[4*i+1], img.Pix[4*i+2], img.Pix[4*i+3] = scale(samples[3*i]), scale(samples[3*i+1]), scale(samples[3*i+2]), 255
	}
	return img, nil
}

// pnmBit reads one P1 sample: 0 or 1, white space and comments between.
func pnmBit(r *bufio.Reader) (int, error) {
	for {
		c, err := r.ReadByte()
		if err != nil {
			return 0, fmt.Errorf("pnm: truncated data")
		}
		switch c {
		case '0', '1':
			return int(c - '0'), nil
		case '#':
			if _, err := r.ReadString('\n'); err != nil {
				return 0, fmt.Errorf("pnm: truncated data")
			}
		case ' ', '\t', '\n', '\r', '\v', '\f':
		default:
			return 0, fmt.Errorf("pnm: unexpected byte %q in the data", c)
		}
	}
}
