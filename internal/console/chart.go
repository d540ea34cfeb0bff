package console

import (
	"fmt"
	"html"
	"html/template"
	"strconv"
	"strings"
)

// Chart is a line chart of counts over buckets, with limits drawn as
// horizontal lines. It renders as inline SVG (SVG) and, for screen
// readers and for reading exact values, as a table (Table) built from the
// same data. It depends on nothing of the console, so that other
// server-rendered pages (the owner portal) can draw the same charts.
type Chart struct {
	ID     string   // unique in the page: names the SVG's title and description
	Title  string   // e.g. "Requests per hour"
	Labels []string // one per bucket, oldest first: the x axis
	Series []Series // each with one value per label
	Limits []Limit
}

// Series is one line of a chart.
type Series struct {
	Name   string
	Values []int64 // len(Chart.Labels) values
}

// Limit is a horizontal line: a limit the series are held to.
type Limit struct {
	Name  string // e.g. "requests_per_hour (plan pro)"
	Value int64
}

// Layout of the SVG, in user units (it scales to its container).
const (
	chartW      = 720
	chartH      = 260
	padLeft     = 64
	padRight    = 16
	padTop      = 16
	padBottom   = 40
	chartTicksY = 4
)

// palette has colours with at least 4.5:1 contrast on white, told apart
// by dash pattern too (limits are dashed), so colour is not the only cue.
var palette = []string{"#1f5fbf", "#0b7a3e", "#8a4f00", "#6b2fa0", "#a1005b", "#00626b"}

const limitColour = "#b00020"

// SVG renders the chart. Every text it holds (title, labels, names) is
// escaped; numbers are formatted here.
func (c Chart) SVG() template.HTML {
	var b strings.Builder
	id := html.EscapeString(c.ID)
	max := c.max()
	top := niceCeil(max)
	plotW := float64(chartW - padLeft - padRight)
	plotH := float64(chartH - padTop - padBottom)
	n := len(c.Labels)
	x := func(i int) float64 {
		if n <= 1 {
			return padLeft + plotW/2
		}
		return padLeft + plotW*float64(i)/float64(n-1)
	}
	y := func(v int64) float64 { return padTop + plotH - plotH*float64(v)/float64(top) }

	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" role="img" aria-labelledby="%s-title %s-desc" xmlns="http://www.w3.org/2000/svg">`,
		chartW, chartH, id, id)
	fmt.Fprintf(&b, `<title id="%s-title">%s</title>`, id, html.EscapeString(c.Title))
	fmt.Fprintf(&b, `<desc id="%s-desc">%s</desc>`, id, html.EscapeString(c.describe()))
	// Axes and horizontal grid with the y values.
	for i := 0; i <= chartTicksY; i++ {
		v := top * int64(i) / chartTicksY
		yy := y(v)
		fmt.Fprintf(&b, `<line class="grid" x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#d0d0d0"/>`, padLeft, yy, chartW-padRight, yy)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" font-size="12" fill="#222">%s</text>`, padLeft-6, yy+4, formatCount(v))
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#222"/>`, padLeft, chartH-padBottom, chartW-padRight, chartH-padBottom)
	// x labels: at most 6, evenly spaced, so that they do not overlap.
	step := max1((n + 5) / 6)
	for i := 0; i < n; i += step {
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" font-size="12" fill="#222">%s</text>`,
			x(i), chartH-padBottom+18, html.EscapeString(c.Labels[i]))
	}
	for i, s := range c.Series {
		colour := palette[i%len(palette)]
		var pts []string
		for j, v := range s.Values {
			if j >= n {
				break
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(j), y(v)))
		}
		fmt.Fprintf(&b, `<polyline class="series" fill="none" stroke="%s" stroke-width="2" points="%s"><title>%s</title></polyline>`,
			colour, strings.Join(pts, " "), html.EscapeString(s.Name))
		if len(pts) == 1 {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`, x(0), y(s.Values[0]), colour)
		}
	}
	for _, l := range c.Limits {
		yy := y(l.Value)
		fmt.Fprintf(&b, `<line class="limit" x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s" stroke-width="2" stroke-dasharray="6 4"><title>%s</title></line>`,
			padLeft, yy, chartW-padRight, yy, limitColour, html.EscapeString(l.Name))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" font-size="12" fill="%s">%s: %s</text>`,
			chartW-padRight, yy-4, limitColour, html.EscapeString(l.Name), formatCount(l.Value))
	}
	// Legend, under the x labels.
	lx := padLeft
	for i, s := range c.Series {
		colour := palette[i%len(palette)]
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="4" fill="%s"/>`, lx, chartH-10, colour)
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="12" fill="#222">%s</text>`, lx+16, chartH-5, html.EscapeString(s.Name))
		lx += 24 + 7*len([]rune(s.Name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // every interpolated text above is escaped
}

// Table is the chart's data as rows: the bucket label, then each series'
// value. Header is the column names.
func (c Chart) Table() (header []string, rows [][]string) {
	header = append(header, "Bucket")
	for _, s := range c.Series {
		header = append(header, s.Name)
	}
	for i, l := range c.Labels {
		row := []string{l}
		for _, s := range c.Series {
			v := int64(0)
			if i < len(s.Values) {
				v = s.Values[i]
			}
			row = append(row, strconv.FormatInt(v, 10))
		}
		rows = append(rows, row)
	}
	return header, rows
}

// describe is the SVG's description: what a screen reader says.
func (c Chart) describe() string {
	var parts []string
	for _, s := range c.Series {
		var total, peak int64
		for _, v := range s.Values {
			total += v
			peak = max(peak, v)
		}
		parts = append(parts, fmt.Sprintf("%s: total %d, peak %d", s.Name, total, peak))
	}
	for _, l := range c.Limits {
		parts = append(parts, fmt.Sprintf("limit %s: %d", l.Name, l.Value))
	}
	if len(c.Labels) > 0 {
		parts = append(parts, fmt.Sprintf("from %s to %s", c.Labels[0], c.Labels[len(c.Labels)-1]))
	}
	return strings.Join(parts, "; ")
}

func (c Chart) max() int64 {
	var m int64
	for _, s := range c.Series {
		for _, v := range s.Values {
			m = max(m, v)
		}
	}
	for _, l := range c.Limits {
		m = max(m, l.Value)
	}
	return m
}

// niceCeil is the top of the y axis for a largest value v: four grid
// steps of 1, 2, 2.5 or 5 times a power of ten (whole numbers), at least
// v.
func niceCeil(v int64) int64 {
	if v <= chartTicksY {
		return chartTicksY
	}
	need := (v + chartTicksY - 1) / chartTicksY // the smallest whole step that reaches v
	for p := int64(1); ; p *= 10 {
		for _, tenths := range []int64{10, 20, 25, 50} {
			if tenths*p%10 != 0 {
				continue // 2.5: not a whole step
			}
			if step := tenths * p / 10; step >= need {
				return chartTicksY * step
			}
		}
	}
}

// formatCount is n with k, M and G suffixes above 10 000.
func formatCount(n int64) string {
	switch {
	case n >= 10_000_000_000:
		return strconv.FormatInt(n/1_000_000_000, 10) + "G"
	case n >= 10_000_000:
		return strconv.FormatInt(n/1_000_000, 10) + "M"
	case n >= 10_000:
		return strconv.FormatInt(n/1_000, 10) + "k"
	}
	return strconv.FormatInt(n, 10)
}

func max1(n int) int { return max(n, 1) }
