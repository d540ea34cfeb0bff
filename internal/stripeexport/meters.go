package stripeexport

import (
	"fmt"
	"sort"
	"strings"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ids"
)

// Metrics a usage event counts, in the order meter events are made.
var Metrics = []string{"requests", "units", "bytes"}

// Meters maps a metric, or a metric of one feature, to the event_name of a
// Stripe meter: "units" for every event's units, "units@search" for the
// units of events of feature search (which then do not go to "units").
type Meters map[string]string

// maxEventName is Stripe's limit on a meter event's event_name.
const maxEventName = 100

// ParseMeters parses KEYPLANE_STRIPE_METERS: comma-separated
// metric[@feature]=event_name pairs, e.g.
// "requests=api_requests,units=api_tokens,units@search=search_tokens".
// An empty string is no mapping. Errors are errs.Invalid and say what to fix.
func ParseMeters(s string) (Meters, error) {
	m := Meters{}
	if strings.TrimSpace(s) == "" {
		return m, nil
	}
	for _, pair := range strings.Split(s, ",") {
		k, name, ok := strings.Cut(strings.TrimSpace(pair), "=")
		k, name = strings.TrimSpace(k), strings.TrimSpace(name)
		if !ok || k == "" || name == "" {
			return nil, errs.E(errs.Invalid, "stripe meters: %q is not metric[@feature]=event_name", pair)
		}
		metric, feature, hasFeature := strings.Cut(k, "@")
		if !isMetric(metric) {
			return nil, errs.E(errs.Invalid, "stripe meters: %q: the metric must be one of %s", pair, strings.Join(Metrics, ", "))
		}
		if hasFeature && !ids.ValidFeature(feature) {
			return nil, errs.E(errs.Invalid, "stripe meters: %q: the feature must be %s", pair, ids.FeatureSyntax)
		}
		if len(name) > maxEventName || strings.ContainsAny(name, " \t\r\n") {
			return nil, errs.E(errs.Invalid, "stripe meters: %q: an event_name is 1-%d characters without spaces", pair, maxEventName)
		}
		if _, dup := m[k]; dup {
			return nil, errs.E(errs.Invalid, "stripe meters: %s is mapped twice", k)
		}
		m[k] = name
	}
	return m, nil
}

func isMetric(s string) bool {
	for _, m := range Metrics {
		if s == m {
			return true
		}
	}
	return false
}

// EventName returns the meter that metric of an event of feature goes to,
// and whether there is one.
func (m Meters) EventName(metric, feature string) (string, bool) {
	if feature != "" {
		if n, ok := m[metric+"@"+feature]; ok {
			return n, true
		}
	}
	n, ok := m[metric]
	return n, ok
}

// String lists the mapping in its configuration syntax, sorted.
func (m Meters) String() string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, fmt.Sprintf("%s=%s", k, v))
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}
