package bench

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"}

// Label names a study result's setting, such as "fastcdc-v1.0.0 16K/64K/256K".
func (r StudyResult) Label() string {
	k := func(n int) string {
		if n >= 1<<20 && n%(1<<20) == 0 {
			return fmt.Sprintf("%dM", n>>20)
		}
		return fmt.Sprintf("%dK", n>>10)
	}
	return fmt.Sprintf("%s %s/%s/%s", r.Params.Kind, k(r.Params.MinSize), k(r.Params.AvgSize), k(r.Params.MaxSize))
}

// PlotSVG draws two charts as one SVG: the chunk size distribution of each
// setting (share of chunks per power-of-two size class) and each setting's
// dedup ratio.
func PlotSVG(w io.Writer, results []StudyResult) error {
	const width, left, right, top = 900, 70, 260, 40
	const hist = 300 // height of the distribution chart
	barH := 22
	height := top + hist + 90 + len(results)*barH + 40
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="14" font-weight="bold">Chunk size distribution</text>`+"\n", left)

	// Size classes present in any result.
	lo, hi := 31, 0
	for _, r := range results {
		for i, n := range r.Histogram {
			if n > 0 {
				lo, hi = min(lo, i), max(hi, i)
			}
		}
	}
	if lo > hi {
		lo, hi = 10, 20
	}
	plotW := float64(width - left - right)
	x := func(i int) float64 {
		if hi == lo {
			return float64(left)
		}
		return float64(left) + plotW*float64(i-lo)/float64(hi-lo)
	}
	y := func(share float64) float64 { return float64(top+hist) - share*float64(hist) }
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, top+hist, width-right, top+hist)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, top, left, top+hist)
	for i := lo; i <= hi; i++ {
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x(i), top+hist+16, sizeClass(i))
	}
	for _, s := range []float64{0, 0.25, 0.5, 0.75, 1} {
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%.0f%%</text>`+"\n", left-6, y(s)+4, s*100)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">chunk size (power-of-two class)</text>`+"\n", left+int(plotW)/2, top+hist+34)
	for ri, r := range results {
		color := palette[ri%len(palette)]
		var pts []string
		for i := lo; i <= hi; i++ {
			share := 0.0
			if r.Chunks > 0 {
				share = float64(r.Histogram[i]) / float64(r.Chunks)
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(share)))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", color, strings.Join(pts, " "))
		ly := top + 10 + ri*16
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="4" fill="%s"/>`+"\n", width-right+12, ly-4, color)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", width-right+30, ly+1, html.EscapeString(r.Label()))
	}

	// Dedup ratio bars.
	by := top + hist + 70
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="14" font-weight="bold">Dedup ratio (all versions ÷ unique bytes)</text>`+"\n", left, by-12)
	best := 1.0
	for _, r := range results {
		best = math.Max(best, r.DedupRatio)
	}
	for ri, r := range results {
		wBar := (plotW - 60) * r.DedupRatio / best
		yy := by + ri*barH
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", left, yy, wBar, barH-6, palette[ri%len(palette)])
		fmt.Fprintf(&b, `<text x="%.1f" y="%d">%.2f  %s</text>`+"\n", float64(left)+wBar+6, yy+barH-10, r.DedupRatio, html.EscapeString(r.Label()))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func sizeClass(i int) string {
	switch {
	case i >= 20:
		return fmt.Sprintf("%dM", 1<<(i-20))
	case i >= 10:
		return fmt.Sprintf("%dK", 1<<(i-10))
	}
	return fmt.Sprintf("%d", 1<<i)
}
