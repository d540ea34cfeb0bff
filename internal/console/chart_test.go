package console

import (
	"encoding/xml"
	"strings"
	"testing"
)

func TestChartSVGIsWellFormedEscapedAndDrawsLimits(t *testing.T) {
	c := Chart{ID: `c"1`, Title: `<script>alert(1)</script>`, Labels: []string{"a", "b<", "c"},
		Series: []Series{{Name: `f"><img src=x>`, Values: []int64{1, 5, 3}}},
		Limits: []Limit{{Name: "requests_per_day & co", Value: 8}}}
	svg := string(c.SVG())
	for _, raw := range []string{"<script>", "<img", `c"1`, "b<<"} {
		if strings.Contains(svg, raw) {
			t.Errorf("SVG holds %q unescaped", raw)
		}
	}
	// It parses as XML: every text was escaped, every element closed.
	d := xml.NewDecoder(strings.NewReader(svg))
	var polylines, limits int
	for {
		tok, err := d.Token()
		if err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("SVG is not well formed: %v\n%s", err, svg)
			}
			break
		}
		if se, ok := tok.(xml.StartElement); ok {
			for _, a := range se.Attr {
				if a.Name.Local == "class" && a.Value == "series" {
					polylines++
				}
				if a.Name.Local == "class" && a.Value == "limit" {
					limits++
				}
			}
		}
	}
	if polylines != 1 || limits != 1 {
		t.Errorf("%d series and %d limit lines, want 1 and 1", polylines, limits)
	}
	// The y axis reaches the limit (8), so the limit line is in the plot.
	if !strings.Contains(svg, ">8</text>") {
		t.Errorf("the y axis does not reach the limit:\n%s", svg)
	}
	h, rows := c.Table()
	if strings.Join(h, "|") != `Bucket|f"><img src=x>` || len(rows) != 3 || strings.Join(rows[1], "|") != "b<|5" {
		t.Errorf("table: %v %v", h, rows)
	}
}

func TestNiceCeil(t *testing.T) {
	for in, want := range map[int64]int64{0: 4, 3: 4, 5: 8, 11: 20, 130: 200, 900: 1000, 1001: 1000 + 1000, 45000: 80000, 41: 80, 8: 8} {
		if got := niceCeil(in); got != want {
			t.Errorf("niceCeil(%d) = %d, want %d", in, got, want)
		}
	}
}
