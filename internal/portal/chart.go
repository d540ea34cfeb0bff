package portal

import (
	"fmt"
	"html"
	"html/template"
	"strings"
)

// chartPoint is one bar of a chart.
type chartPoint struct {
	Label string
	Value int64
}

// barChart renders points as an inline SVG bar chart, with a title per
// bar (its label and value) and the maximum on the axis. Labels are
// escaped; the rest is numbers.
func barChart(points []chartPoint) template.HTML {
	const w, h, pad = 600, 160, 20
	if len(points) == 0 {
		return ""
	}
	var top int64
	for _, p := range points {
		top = max(top, p.Value)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" role="img" aria-label="requests per day">`, w, h+pad)
	bw := float64(w) / float64(len(points))
	for i, p := range points {
		bh := 0.0
		if top > 0 {
			bh = float64(h) * float64(p.Value) / float64(top)
		}
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s: %d</title></rect>`,
			float64(i)*bw+1, float64(h)-bh, bw-2, bh, html.EscapeString(p.Label), p.Value)
	}
	fmt.Fprintf(&b, `<text x="0" y="%d">%s</text><text x="%d" y="%d" text-anchor="end">%s</text><text x="2" y="12">max %d</text></svg>`,
		h+pad-4, html.EscapeString(points[0].Label), w, h+pad-4, html.EscapeString(points[len(points)-1].Label), top)
	return template.HTML(b.String())
}
