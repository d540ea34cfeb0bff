package infra

import (
	"bufio"
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"

	"github.com/keyplane/keyplane/internal/queue"
	"github.com/keyplane/keyplane/internal/wire"
)

// plannedEntryPoints are functions that infra/ describes before register.go
// registers them (issue 6 lands the Terraform first), each with the bool
// variable that deploys it. The variable defaults to false, so that the
// documented deploy builds only registered functions; with it set true the
// entry point may still be absent from register.go (the test logs which
// still are). Once it is registered, deploy it by default (drop the
// variable or default it to true) and remove it here: from then on the
// ordinary drift check covers it.
var plannedEntryPoints = map[string]string{}

// requiredEnv is what every function must have set: GOOGLE_CLOUD_PROJECT
// for config.Validate (required with the cloud backends, which
// config.Cloud selects), and the rest so that the function addresses this
// deployment's secrets, key prefix, database and topic rather than the
// defaults config.Cloud falls back to. Keep it in step with
// internal/config.Config.Validate.
var requiredEnv = []string{
	"GOOGLE_CLOUD_PROJECT",
	"KEYPLANE_SECRET_PREFIX",
	"KEYPLANE_KEY_PREFIX",
	"KEYPLANE_FIRESTORE_DATABASE",
	"KEYPLANE_USAGE_TOPIC",
	"KEYPLANE_NOTIFICATIONS_TOPIC",
	"KEYPLANE_TELEMETRY",
}

// keySecretMethods are the secrets.Vault methods each function calls on key
// secrets ("<prefix>key-<id>"); its key_secret_roles must grant exactly the
// permissions internal/secrets/secretmanagervault/doc.go lists for them. A function
// not named here must have no key-secret role.
var keySecretMethods = map[string][]string{
	"keys":         {"CreateKeySecret", "KeySecret", "SetKeySecretEnabled", "DestroyKeySecret", "DeleteKeySecret"},
	"sweep":        {"SetKeySecretEnabled", "DeleteKeySecret"},
	"leak-reports": {"SetKeySecretEnabled", "DestroyKeySecret"},
	// The console's create, rotate, disable, enable and revoke; a replayed
	// create reads the secret back. It never reaps (DeleteKeySecret).
	"faces": {"CreateKeySecret", "KeySecret", "SetKeySecretEnabled", "DestroyKeySecret"},
}

// ownerWebhookSecretMethods are the secrets.Vault methods each function
// calls on owners' webhook signing secrets ("<prefix>owner-webhook-<hash>",
// internal/notify.SecretName): Keys adds a version on every PUT of a webhook
// (notify.Service.SetWebhook), DeliverNotification reads the version that
// signs (notify.Deliverer). Its owner_webhook_secret_roles must grant
// exactly their permissions, except secretmanager.secrets.create, which a
// condition cannot restrict: the function must hold that one unconditioned
// through its key_secret_roles. A function not named here must have no
// owner-webhook-secret role.
var ownerWebhookSecretMethods = map[string][]string{
	"keys":           {"AddSecretVersion"},
	"deliver-notify": {"Secret", "SecretVersions"},
}

// namedSecretMethods are the methods internal/wire uses on deployment secrets
// (pepper, admin-token, webhook-secret, plans); the named_secret_reader
// role must grant exactly their permissions.
var namedSecretMethods = []string{"Secret", "SecretVersions"}

// module is the parsed configuration of this directory.
type module struct {
	files     map[string][]byte               // file name → source
	bodies    map[string]*hclsyntax.Body      // file name → body
	locals    map[string]*hclsyntax.Attribute // local name → definition
	resources map[string]*hclsyntax.Block     // "type.name" → block
}

func loadModule(t *testing.T) *module {
	t.Helper()
	names, err := filepath.Glob("*.tf")
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatal("no .tf files in infra/")
	}
	m := &module{
		files:     map[string][]byte{},
		bodies:    map[string]*hclsyntax.Body{},
		locals:    map[string]*hclsyntax.Attribute{},
		resources: map[string]*hclsyntax.Block{},
	}
	p := hclparse.NewParser()
	for _, name := range names {
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, diags := p.ParseHCL(src, name)
		if diags.HasErrors() {
			t.Fatalf("%s does not parse: %s", name, diags.Error())
		}
		body := f.Body.(*hclsyntax.Body)
		m.files[name], m.bodies[name] = src, body
		for _, b := range body.Blocks {
			switch b.Type {
			case "locals":
				for n, a := range b.Body.Attributes {
					if prev, ok := m.locals[n]; ok {
						t.Fatalf("local.%s is defined twice: %s and %s", n, prev.SrcRange, a.SrcRange)
					}
					m.locals[n] = a
				}
			case "resource", "data":
				if len(b.Labels) != 2 {
					t.Fatalf("%s: %s block with labels %q", b.DefRange(), b.Type, b.Labels)
				}
				key := b.Labels[0] + "." + b.Labels[1]
				if b.Type == "data" {
					key = "data." + key
				}
				m.resources[key] = b
			}
		}
	}
	return m
}

// blocksOfType returns the resource blocks of one resource type.
func (m *module) blocksOfType(typ string) []*hclsyntax.Block {
	var bs []*hclsyntax.Block
	for _, b := range m.resources {
		if b.Type == "resource" && b.Labels[0] == typ {
			bs = append(bs, b)
		}
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].Labels[1] < bs[j].Labels[1] })
	return bs
}

func (m *module) local(t *testing.T, name string) hclsyntax.Expression {
	t.Helper()
	a, ok := m.locals[name]
	if !ok {
		t.Fatalf("local.%s is not defined", name)
	}
	return a.Expr
}

// objectItems returns the items of an object constructor by their literal
// keys.
func objectItems(t *testing.T, expr hclsyntax.Expression, what string) map[string]hclsyntax.Expression {
	t.Helper()
	obj, ok := expr.(*hclsyntax.ObjectConsExpr)
	if !ok {
		t.Fatalf("%s (%s) is not an object constructor { … }", what, expr.Range())
	}
	items := map[string]hclsyntax.Expression{}
	for _, it := range obj.Items {
		k, diags := it.KeyExpr.Value(nil)
		if diags.HasErrors() || !k.IsKnown() || k.Type() != cty.String {
			t.Fatalf("%s: a key at %s is not a literal string", what, it.KeyExpr.Range())
		}
		items[k.AsString()] = it.ValueExpr
	}
	return items
}

// literalString evaluates an expression without variables to a string.
func literalString(expr hclsyntax.Expression) (string, bool) {
	v, diags := expr.Value(nil)
	if diags.HasErrors() || !v.IsKnown() || v.IsNull() || v.Type() != cty.String {
		return "", false
	}
	return v.AsString(), true
}

// literalStrings evaluates a list of literal strings.
func literalStrings(t *testing.T, expr hclsyntax.Expression, what string) []string {
	t.Helper()
	tup, ok := expr.(*hclsyntax.TupleConsExpr)
	if !ok {
		t.Fatalf("%s (%s) is not a list constructor [ … ]", what, expr.Range())
	}
	var out []string
	for _, e := range tup.Exprs {
		s, ok := literalString(e)
		if !ok {
			t.Fatalf("%s: %s is not a literal string", what, e.Range())
		}
		out = append(out, s)
	}
	return out
}

// traversalString renders a static traversal like each.value.env.
func traversalString(tr hcl.Traversal) string {
	var b strings.Builder
	for _, step := range tr {
		switch s := step.(type) {
		case hcl.TraverseRoot:
			b.WriteString(s.Name)
		case hcl.TraverseAttr:
			b.WriteString("." + s.Name)
		case hcl.TraverseIndex:
			if s.Key.Type() == cty.String {
				b.WriteString(fmt.Sprintf("[%q]", s.Key.AsString()))
			} else {
				b.WriteString("[…]")
			}
		}
	}
	return b.String()
}

// blocks returns the nested blocks of a type, whether written literally or
// as dynamic "type" { … }.
func blocks(body *hclsyntax.Body, typ string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, b := range body.Blocks {
		if b.Type == typ || b.Type == "dynamic" && len(b.Labels) == 1 && b.Labels[0] == typ {
			out = append(out, b)
		}
	}
	return out
}

// variableDefaults returns var.X → its default, for every variable whose
// default is a literal (null included).
func variableDefaults(t *testing.T, m *module) map[string]cty.Value {
	t.Helper()
	out := map[string]cty.Value{}
	for _, body := range m.bodies {
		for _, b := range body.Blocks {
			if b.Type != "variable" || len(b.Labels) != 1 {
				continue
			}
			a, ok := b.Body.Attributes["default"]
			if !ok {
				continue
			}
			if v, diags := a.Expr.Value(nil); !diags.HasErrors() {
				out[b.Labels[0]] = v
			}
		}
	}
	return out
}

// config is one set of variable values the function set is checked with.
type config struct {
	name string
	vars map[string]cty.Value
}

// configs returns the configurations the tests evaluate local.functions
// in: every variable at its default (the documented deploy), and every
// variable of plannedEntryPoints set to true.
func configs(t *testing.T, m *module) []config {
	t.Helper()
	defaults := variableDefaults(t, m)
	planned := maps.Clone(defaults)
	var gates []string
	for ep, gate := range plannedEntryPoints {
		v, ok := defaults[gate]
		if !ok || v.Type() != cty.Bool || v.IsNull() {
			t.Fatalf("plannedEntryPoints[%q]: var.%s must be declared as a bool with a literal default", ep, gate)
		}
		if v.True() {
			t.Errorf("var.%s defaults to true, which deploys %s although it is planned (not registered): default it to false", gate, ep)
		}
		planned[gate] = cty.True
		gates = append(gates, "-var "+gate+"=true")
	}
	sort.Strings(gates)
	out := []config{{name: "defaults", vars: defaults}}
	if len(gates) > 0 {
		out = append(out, config{name: strings.Join(gates, " "), vars: planned})
	}
	return out
}

// functionEntries returns local.functions as deployed with the variable
// values vars: short name → its attributes. It evaluates the expression
// statically: object constructors, merge(), conditionals on variables,
// parentheses and local.X; anything else is an error.
func functionEntries(t *testing.T, m *module, vars map[string]cty.Value) map[string]map[string]hclsyntax.Expression {
	t.Helper()
	ctx := &hcl.EvalContext{Variables: map[string]cty.Value{"var": cty.ObjectVal(vars)}}
	var eval func(e hclsyntax.Expression) map[string]hclsyntax.Expression
	eval = func(e hclsyntax.Expression) map[string]hclsyntax.Expression {
		switch e := e.(type) {
		case *hclsyntax.ObjectConsExpr:
			return objectItems(t, e, "local.functions")
		case *hclsyntax.FunctionCallExpr:
			if e.Name != "merge" {
				t.Fatalf("%s: cannot evaluate %s() statically in local.functions; use merge() of objects", e.Range(), e.Name)
			}
			out := map[string]hclsyntax.Expression{}
			for _, arg := range e.Args {
				maps.Copy(out, eval(arg))
			}
			return out
		case *hclsyntax.ConditionalExpr:
			c, diags := e.Condition.Value(ctx)
			if diags.HasErrors() || !c.IsKnown() || c.IsNull() || c.Type() != cty.Bool {
				t.Fatalf("%s: cannot evaluate the condition statically (variables with literal defaults only): %s", e.Condition.Range(), diags.Error())
			}
			if c.True() {
				return eval(e.TrueResult)
			}
			return eval(e.FalseResult)
		case *hclsyntax.ParenthesesExpr:
			return eval(e.Expression)
		case *hclsyntax.ScopeTraversalExpr:
			if tr := e.Traversal; tr.RootName() == "local" && len(tr) == 2 {
				return eval(m.local(t, tr[1].(hcl.TraverseAttr).Name))
			}
		}
		t.Fatalf("%s: cannot evaluate a %T in local.functions statically", e.Range(), e)
		return nil
	}
	out := map[string]map[string]hclsyntax.Expression{}
	for name, e := range eval(m.local(t, "functions")) {
		out[name] = objectItems(t, e, "local.functions."+name)
	}
	return out
}

// allFunctionEntries returns every function some configuration deploys.
func allFunctionEntries(t *testing.T, m *module) map[string]map[string]hclsyntax.Expression {
	t.Helper()
	out := map[string]map[string]hclsyntax.Expression{}
	for _, c := range configs(t, m) {
		maps.Copy(out, functionEntries(t, m, c.vars))
	}
	return out
}

func TestTerraformParses(t *testing.T) {
	m := loadModule(t)
	for _, want := range []string{"versions.tf", "variables.tf", "main.tf", "outputs.tf"} {
		if _, ok := m.files[want]; !ok {
			t.Errorf("infra/%s is missing", want)
		}
	}
}

// TestTerraformIsFormatted checks what `terraform fmt -check` checks:
// hclwrite.Format is the formatter terraform fmt runs.
func TestTerraformIsFormatted(t *testing.T) {
	m := loadModule(t)
	for name, src := range m.files {
		if got := hclwrite.Format(src); !bytes.Equal(got, src) {
			t.Errorf("%s is not formatted: run `terraform fmt infra` (first difference at line %d)", name, firstDiffLine(src, got))
		}
	}
}

func firstDiffLine(a, b []byte) int {
	line := 1
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return line
		}
		if a[i] == '\n' {
			line++
		}
	}
	return line
}

// registeredEntryPoints returns the functions the module root registers:
// the first argument of every functions.HTTP / functions.CloudEvent call in
// its non-test files, with the kind of registration.
func registeredEntryPoints(t *testing.T) map[string]string {
	t.Helper()
	const ffPath = "github.com/GoogleCloudPlatform/functions-framework-go/functions"
	names, err := filepath.Glob("../*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	out := map[string]string{}
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		pkgName := ""
		for _, imp := range f.Imports {
			if p, _ := strconv.Unquote(imp.Path.Value); p == ffPath {
				pkgName = "functions"
				if imp.Name != nil {
					pkgName = imp.Name.Name
				}
			}
		}
		if pkgName == "" {
			continue
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); !ok || x.Name != pkgName {
				return true
			}
			if sel.Sel.Name != "HTTP" && sel.Sel.Name != "CloudEvent" && sel.Sel.Name != "Typed" {
				return true
			}
			pos := fset.Position(call.Pos())
			if len(call.Args) == 0 {
				t.Fatalf("%s: %s.%s without arguments", pos, pkgName, sel.Sel.Name)
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				t.Fatalf("%s: the function name must be a string literal for this check to see it", pos)
			}
			fn, _ := strconv.Unquote(lit.Value)
			if prev, dup := out[fn]; dup {
				t.Errorf("%s: %q is registered twice (%s and %s)", pos, fn, prev, sel.Sel.Name)
			}
			out[fn] = sel.Sel.Name
			return true
		})
	}
	return out
}

// TestFunctionsMatchRegisterGo keeps Terraform's function set and the
// Functions Framework registrations in step: a registered function that is
// never deployed, or a deployed entry point that nothing registers (the
// build fails), is an error. Planned entry points may be deployed first.
func TestFunctionsMatchRegisterGo(t *testing.T) {
	m := loadModule(t)
	registered := registeredEntryPoints(t)
	if len(registered) == 0 {
		t.Fatal("found no functions.HTTP / functions.CloudEvent registration in the module root")
	}

	// The resource really is driven by the map: for_each = local.functions
	// and entry_point = each.value.entry_point.
	fnBlocks := m.blocksOfType("google_cloudfunctions2_function")
	if len(fnBlocks) != 1 {
		t.Fatalf("want one google_cloudfunctions2_function resource (for_each over local.functions), found %d", len(fnBlocks))
	}
	fnBlock := fnBlocks[0]
	if a, ok := fnBlock.Body.Attributes["for_each"]; !ok || exprString(a.Expr) != "local.functions" {
		t.Errorf("%s: for_each must be local.functions", fnBlock.DefRange())
	}
	build := blocks(fnBlock.Body, "build_config")
	if len(build) != 1 {
		t.Fatalf("%s: want one build_config block", fnBlock.DefRange())
	}
	if a, ok := build[0].Body.Attributes["entry_point"]; !ok || exprString(a.Expr) != "each.value.entry_point" {
		t.Errorf("%s: build_config.entry_point must be each.value.entry_point", build[0].DefRange())
	}
	if len(blocks(fnBlock.Body, "event_trigger")) != 0 {
		t.Errorf("%s: functions are HTTP-triggered; CloudEvent functions are fed by push subscriptions (pubsub.tf)", fnBlock.DefRange())
	}

	pushed := pushTargets(t, m)
	for _, c := range configs(t, m) {
		checkFunctionSet(t, c, functionEntries(t, m, c.vars), registered, pushed)
	}
	for ep := range plannedEntryPoints {
		if _, ok := registered[ep]; ok {
			t.Errorf("%s is registered now: deploy it by default (drop var.%s or default it to true) and remove it from plannedEntryPoints", ep, plannedEntryPoints[ep])
		}
	}
}

// checkFunctionSet compares the functions one configuration deploys with
// register.go's registrations.
func checkFunctionSet(t *testing.T, c config, fns map[string]map[string]hclsyntax.Expression, registered map[string]string, pushed map[string]bool) {
	t.Helper()
	deployed := map[string]string{} // entry point → short name
	for name, attrs := range fns {
		e, ok := attrs["entry_point"]
		if !ok {
			t.Errorf("local.functions.%s has no entry_point", name)
			continue
		}
		ep, ok := literalString(e)
		if !ok {
			t.Errorf("local.functions.%s.entry_point (%s) must be a literal string", name, e.Range())
			continue
		}
		if prev, dup := deployed[ep]; dup {
			t.Errorf("[%s] entry point %s is deployed twice: %s and %s", c.name, ep, prev, name)
		}
		deployed[ep] = name
	}

	for ep, kind := range registered {
		if _, ok := deployed[ep]; !ok {
			t.Errorf("[%s] register.go registers %s (functions.%s) but local.functions deploys no function with entry_point %q", c.name, ep, kind, ep)
		}
	}
	var pending []string
	for ep, name := range deployed {
		if _, ok := registered[ep]; ok {
			continue
		}
		if gate, ok := plannedEntryPoints[ep]; ok && c.vars[gate].True() {
			pending = append(pending, ep)
			continue
		}
		t.Errorf("[%s] local.functions.%s deploys entry point %s, which register.go does not register (the build would fail)", c.name, name, ep)
	}
	sort.Strings(pending)
	if len(pending) > 0 {
		t.Logf("[%s] planned entry points not registered yet (deployed by infra/ ahead of the code): %s", c.name, strings.Join(pending, ", "))
	}
	for ep, gate := range plannedEntryPoints {
		if _, ok := deployed[ep]; !ok && c.vars[gate].True() {
			t.Errorf("[%s] var.%s is set but local.functions deploys no function with entry_point %q", c.name, gate, ep)
		}
	}

	// A CloudEvent function has no HTTP caller of its own: some push
	// subscription must deliver to it.
	for ep, kind := range registered {
		if kind != "CloudEvent" {
			continue
		}
		if name, ok := deployed[ep]; ok && !pushed[name] {
			t.Errorf("%s is a CloudEvent function but no push subscription delivers to google_cloudfunctions2_function.fn[%q]", ep, name)
		}
	}
}

// pushTargets returns the functions (short names) that a push
// subscription's endpoint points at.
func pushTargets(t *testing.T, m *module) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, sub := range m.blocksOfType("google_pubsub_subscription") {
		for _, pc := range blocks(sub.Body, "push_config") {
			a, ok := pc.Body.Attributes["push_endpoint"]
			if !ok {
				continue
			}
			for _, tr := range a.Expr.Variables() {
				if len(tr) < 3 || tr.RootName() != "google_cloudfunctions2_function" {
					continue
				}
				if attr, ok := tr[1].(hcl.TraverseAttr); !ok || attr.Name != "fn" {
					continue
				}
				if idx, ok := tr[2].(hcl.TraverseIndex); ok && idx.Key.Type() == cty.String {
					out[idx.Key.AsString()] = true
				}
			}
		}
	}
	return out
}

// exprString renders simple expressions (traversals) for comparisons.
func exprString(e hclsyntax.Expression) string {
	if st, ok := e.(*hclsyntax.ScopeTraversalExpr); ok {
		return traversalString(st.Traversal)
	}
	return fmt.Sprintf("<%T>", e)
}

// envKeys statically evaluates which keys an environment_variables
// expression sets for sure, for the function entry fn: object
// constructors, merge(), local.X, each.value.X and conditionals (the keys
// both branches set). Anything else is an error, so that the check never
// passes by not understanding the expression.
func envKeys(m *module, e hclsyntax.Expression, fn map[string]hclsyntax.Expression) (map[string]hclsyntax.Expression, error) {
	switch e := e.(type) {
	case *hclsyntax.ObjectConsExpr:
		out := map[string]hclsyntax.Expression{}
		for _, it := range e.Items {
			k, diags := it.KeyExpr.Value(nil)
			if diags.HasErrors() || !k.IsKnown() || k.Type() != cty.String {
				return nil, fmt.Errorf("%s: environment variable names must be literal", it.KeyExpr.Range())
			}
			out[k.AsString()] = it.ValueExpr
		}
		return out, nil
	case *hclsyntax.FunctionCallExpr:
		if e.Name != "merge" {
			return nil, fmt.Errorf("%s: cannot evaluate %s() statically; use merge() of objects", e.Range(), e.Name)
		}
		out := map[string]hclsyntax.Expression{}
		for _, arg := range e.Args {
			keys, err := envKeys(m, arg, fn)
			if err != nil {
				return nil, err
			}
			for k, v := range keys {
				out[k] = v
			}
		}
		return out, nil
	case *hclsyntax.ConditionalExpr:
		a, err := envKeys(m, e.TrueResult, fn)
		if err != nil {
			return nil, err
		}
		b, err := envKeys(m, e.FalseResult, fn)
		if err != nil {
			return nil, err
		}
		out := map[string]hclsyntax.Expression{}
		for k, v := range a {
			if _, ok := b[k]; ok {
				out[k] = v
			}
		}
		return out, nil
	case *hclsyntax.ParenthesesExpr:
		return envKeys(m, e.Expression, fn)
	case *hclsyntax.ScopeTraversalExpr:
		tr := e.Traversal
		switch {
		case tr.RootName() == "local" && len(tr) == 2:
			name := tr[1].(hcl.TraverseAttr).Name
			a, ok := m.locals[name]
			if !ok {
				return nil, fmt.Errorf("%s: local.%s is not defined", e.Range(), name)
			}
			return envKeys(m, a.Expr, fn)
		case tr.RootName() == "each" && len(tr) == 3 && traversalString(tr[:2]) == "each.value":
			name := tr[2].(hcl.TraverseAttr).Name
			v, ok := fn[name]
			if !ok {
				return nil, fmt.Errorf("%s: the function entry has no attribute %s", e.Range(), name)
			}
			return envKeys(m, v, fn)
		}
		return nil, fmt.Errorf("%s: cannot evaluate %s statically", e.Range(), traversalString(tr))
	}
	return nil, fmt.Errorf("%s: cannot evaluate a %T statically", e.Range(), e)
}

// TestFunctionsGetRequiredEnvironment checks that every function sets the
// variables the code requires, with a value that is not a literal empty
// string.
func TestFunctionsGetRequiredEnvironment(t *testing.T) {
	m := loadModule(t)
	fnBlocks := m.blocksOfType("google_cloudfunctions2_function")
	if len(fnBlocks) != 1 {
		t.Fatalf("want one google_cloudfunctions2_function resource, found %d", len(fnBlocks))
	}
	sc := blocks(fnBlocks[0].Body, "service_config")
	if len(sc) != 1 {
		t.Fatalf("%s: want one service_config block", fnBlocks[0].DefRange())
	}
	envAttr, ok := sc[0].Body.Attributes["environment_variables"]
	if !ok {
		t.Fatalf("%s: service_config sets no environment_variables", sc[0].DefRange())
	}
	for name, fn := range allFunctionEntries(t, m) {
		env, err := envKeys(m, envAttr.Expr, fn)
		if err != nil {
			t.Fatalf("function %s: %v", name, err)
		}
		for _, k := range requiredEnv {
			v, ok := env[k]
			if !ok {
				t.Errorf("function %s does not set %s", name, k)
				continue
			}
			if s, lit := literalString(v); lit && s == "" {
				t.Errorf("function %s sets %s to the empty string", name, k)
			}
		}
	}
}

func TestPushSubscriptionsHaveDeadLetterPolicy(t *testing.T) {
	m := loadModule(t)
	push := 0
	for _, sub := range m.blocksOfType("google_pubsub_subscription") {
		if len(blocks(sub.Body, "push_config")) == 0 {
			continue
		}
		push++
		dl := blocks(sub.Body, "dead_letter_policy")
		if len(dl) == 0 {
			t.Errorf("%s: push subscription %s has no dead_letter_policy: a poison message would be retried forever", sub.DefRange(), sub.Labels[1])
			continue
		}
		if _, ok := dl[0].Body.Attributes["dead_letter_topic"]; !ok {
			t.Errorf("%s: dead_letter_policy of %s names no dead_letter_topic", dl[0].DefRange(), sub.Labels[1])
		}
	}
	if push == 0 {
		t.Error("found no push subscription: RecordUsage is fed by one")
	}
}

// broadRole matches the roles no grant may use without a written reason:
// basic roles and every admin role.
var broadRole = regexp.MustCompile(`(?i)^roles/(owner|editor|.*admin)$`)

// broadRoleUses returns the string literals in src that name a broad role
// on a line without a "# reason:" comment.
func broadRoleUses(src []byte, filename string) ([]string, error) {
	toks, diags := hclsyntax.LexConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, diags
	}
	reasoned := map[int]bool{}
	for _, tok := range toks {
		if tok.Type == hclsyntax.TokenComment && strings.Contains(string(tok.Bytes), "reason:") {
			reasoned[tok.Range.Start.Line] = true
		}
	}
	var out []string
	for _, tok := range toks {
		if tok.Type != hclsyntax.TokenQuotedLit && tok.Type != hclsyntax.TokenStringLit {
			continue
		}
		lit := strings.TrimSpace(string(tok.Bytes))
		if broadRole.MatchString(lit) && !reasoned[tok.Range.Start.Line] {
			out = append(out, fmt.Sprintf("%s:%d: %s", filename, tok.Range.Start.Line, lit))
		}
	}
	return out, nil
}

func TestNoOwnerEditorOrAdminRoles(t *testing.T) {
	m := loadModule(t)
	for name, src := range m.files {
		uses, err := broadRoleUses(src, name)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range uses {
			t.Errorf("%s: a basic or admin role needs a `# reason: …` comment on its line", u)
		}
	}
}

func TestBroadRoleCheckSeesRolesAndReasons(t *testing.T) {
	for _, tc := range []struct {
		src  string
		want int
	}{
		{`role = "roles/owner"`, 1},
		{`role = "roles/editor"`, 1},
		{`role = "roles/secretmanager.admin"`, 1},
		{`role = "roles/iam.securityAdmin"`, 1},
		{`roles = ["roles/datastore.user", "roles/run.admin"]`, 1},
		{`role = "roles/run.admin" # reason: the deployer needs it`, 0},
		{`role = "roles/datastore.user"`, 0},
		{`role = "roles/cloudbuild.builds.builder"`, 0},
		{"# roles/owner is never granted\nrole = \"roles/viewer\"", 0},
	} {
		got, err := broadRoleUses([]byte(tc.src+"\n"), "t.tf")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != tc.want {
			t.Errorf("broadRoleUses(%q) = %q, want %d finding(s)", tc.src, got, tc.want)
		}
	}
}

// docPermissions reads the "# IAM" section of internal/secrets/secretmanagervault's
// package comment: method → the permissions it needs.
func docPermissions(t *testing.T) map[string][]string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "../internal/secrets/secretmanagervault/doc.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil {
		t.Fatal(err)
	}
	if f.Doc == nil {
		t.Fatal("internal/secrets/secretmanagervault/doc.go has no package comment")
	}
	text := f.Doc.Text()
	i := strings.Index(text, "\n# IAM\n")
	if i < 0 {
		t.Fatal("internal/secrets/secretmanagervault/doc.go has no # IAM section")
	}
	text = text[i+len("\n# IAM\n"):]
	if j := strings.Index(text, "\n# "); j >= 0 {
		text = text[:j]
	}
	perm := regexp.MustCompile(`secretmanager\.[a-z]+\.[a-zA-Z]+`)
	method := regexp.MustCompile(`^\t([A-Z][A-Za-z]+)\s`)
	out := map[string][]string{}
	cur := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "\t") {
			cur = ""
			continue
		}
		if mm := method.FindStringSubmatch(line); mm != nil {
			cur = mm[1]
		}
		if cur != "" {
			out[cur] = append(out[cur], perm.FindAllString(line, -1)...)
		}
	}
	if len(out) == 0 {
		t.Fatal("read no method permissions from internal/secrets/secretmanagervault/doc.go")
	}
	return out
}

func union(doc map[string][]string, t *testing.T, methods ...string) []string {
	t.Helper()
	set := map[string]bool{}
	for _, m := range methods {
		ps, ok := doc[m]
		if !ok {
			t.Fatalf("internal/secrets/secretmanagervault/doc.go lists no permissions for %s", m)
		}
		for _, p := range ps {
			set[p] = true
		}
	}
	return sortedKeys(set)
}

func sortedKeys(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// unconditionedPerm is the one Secret Manager permission a custom role may
// carry without a resource.name condition: IAM checks it on the project,
// where a condition cannot see the id of the secret being created.
const unconditionedPerm = "secretmanager.secrets.create"

// TestSecretRolesMatchSecretManagerDoc checks the custom roles against the
// permissions internal/secrets/secretmanagervault/doc.go documents for the methods
// each function calls, per kind of secret: nothing missing (the call fails
// in production), nothing extra (least privilege). Every role granted on
// key secrets carries the key-secret condition and every role granted on
// owner webhook secrets the owner-webhook one; only
// secretmanager.secrets.create is granted without a condition.
func TestSecretRolesMatchSecretManagerDoc(t *testing.T) {
	m := loadModule(t)
	doc := docPermissions(t)

	conditions := map[string]bool{"none": true}
	for name := range objectItems(t, m.local(t, "secret_conditions"), "local.secret_conditions") {
		conditions[name] = true
	}
	type role struct {
		perms     []string
		condition string
	}
	roles := map[string]role{}
	for name, e := range objectItems(t, m.local(t, "custom_roles"), "local.custom_roles") {
		attrs := objectItems(t, e, "local.custom_roles."+name)
		pe, ok := attrs["permissions"]
		if !ok {
			t.Fatalf("local.custom_roles.%s has no permissions", name)
		}
		ce, ok := attrs["condition"]
		if !ok {
			t.Fatalf("local.custom_roles.%s has no condition", name)
		}
		c, ok := literalString(ce)
		if !ok || !conditions[c] {
			t.Fatalf("local.custom_roles.%s.condition must be a literal string naming a local.secret_conditions entry or \"none\"", name)
		}
		ps := literalStrings(t, pe, "local.custom_roles."+name+".permissions")
		sort.Strings(ps)
		roles[name] = role{perms: ps, condition: c}
	}

	// grants returns the permissions a function's role list grants, and
	// which of them come without a condition.
	grants := func(fnName, attr string, fn map[string]hclsyntax.Expression, condition string) (perms, unconditioned []string) {
		e, ok := fn[attr]
		if !ok {
			t.Errorf("local.functions.%s has no %s", fnName, attr)
			return nil, nil
		}
		set, bare := map[string]bool{}, map[string]bool{}
		for _, r := range literalStrings(t, e, "local.functions."+fnName+"."+attr) {
			rl, ok := roles[r]
			if !ok {
				t.Errorf("local.functions.%s.%s: unknown custom role %q", fnName, attr, r)
				continue
			}
			switch {
			case rl.condition == condition:
			case rl.condition == "none" && slices.Equal(rl.perms, []string{unconditionedPerm}):
				bare[unconditionedPerm] = true
			default:
				t.Errorf("local.functions.%s.%s: custom role %s has condition %q and holds %q; roles here must carry the %q condition (only %s may be granted without one)",
					fnName, attr, r, rl.condition, rl.perms, condition, unconditionedPerm)
			}
			for _, p := range rl.perms {
				set[p] = true
			}
		}
		return sortedKeys(set), sortedKeys(bare)
	}

	for name, fn := range allFunctionEntries(t, m) {
		keyPerms, keyBare := grants(name, "key_secret_roles", fn, "key_secrets")
		var want []string
		if methods, ok := keySecretMethods[name]; ok {
			want = union(doc, t, methods...)
		}
		if !slices.Equal(keyPerms, want) {
			t.Errorf("function %s: key-secret permissions = %q, want %q (doc.go's permissions for %q)", name, keyPerms, want, keySecretMethods[name])
		}

		ownerPerms, ownerBare := grants(name, "owner_webhook_secret_roles", fn, "owner_webhook_secrets")
		if len(ownerBare) > 0 {
			t.Errorf("function %s: owner_webhook_secret_roles grants %q without a condition; %s comes from key_secret_roles", name, ownerBare, unconditionedPerm)
		}
		want = nil
		needsCreate := false
		if methods, ok := ownerWebhookSecretMethods[name]; ok {
			for _, p := range union(doc, t, methods...) {
				if p == unconditionedPerm {
					needsCreate = true
					continue
				}
				want = append(want, p)
			}
		}
		if !slices.Equal(ownerPerms, want) {
			t.Errorf("function %s: owner-webhook-secret permissions = %q, want %q (doc.go's permissions for %q, less %s)",
				name, ownerPerms, want, ownerWebhookSecretMethods[name], unconditionedPerm)
		}
		if needsCreate && !slices.Contains(keyBare, unconditionedPerm) {
			t.Errorf("function %s calls %q on owner webhook secrets, which needs %s: grant it unconditioned through key_secret_roles",
				name, ownerWebhookSecretMethods[name], unconditionedPerm)
		}
	}

	reader, ok := roles["named_secret_reader"]
	if !ok {
		t.Fatal("local.custom_roles has no named_secret_reader")
	}
	if want := union(doc, t, namedSecretMethods...); !slices.Equal(reader.perms, want) {
		t.Errorf("named_secret_reader = %q, want %q (doc.go's permissions for %q)", reader.perms, want, namedSecretMethods)
	}
	if reader.condition != "none" {
		t.Errorf("named_secret_reader has condition %q; it is granted on individual secrets (secrets.tf), without a condition", reader.condition)
	}
}

// gcloudignoreEntries reads the repository's .gcloudignore, normalised to
// the form of local.source_excludes (no leading or trailing slash).
func gcloudignoreEntries(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile("../.gcloudignore")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(src))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") {
			t.Fatalf(".gcloudignore: negated pattern %q is not supported by this check", line)
		}
		out = append(out, strings.Trim(line, "/"))
	}
	return out
}

// excludedBy reports whether the directory rel (slash-separated, relative to
// the module root) is inside something the pattern excludes. Patterns are
// paths, or "**/<name>" for a name at any depth.
func excludedBy(rel, pattern string) bool {
	if name, ok := strings.CutPrefix(pattern, "**/"); ok {
		for _, part := range strings.Split(rel, "/") {
			if ok, _ := path.Match(name, part); ok {
				return true
			}
		}
		return false
	}
	return rel == pattern || strings.HasPrefix(rel, pattern+"/")
}

// TestDeploySourceKeepsWhatTheFunctionsImport checks the two lists of what
// a deploy leaves out (archive_file's excludes and .gcloudignore) against
// each other, and against the packages the root package imports: excluding
// one of those would break the build in Cloud Build, not here.
func TestDeploySourceKeepsWhatTheFunctionsImport(t *testing.T) {
	m := loadModule(t)
	excludes := literalStrings(t, m.local(t, "source_excludes"), "local.source_excludes")
	archive, ok := m.resources["data.archive_file.source"]
	if !ok {
		t.Fatal("data.archive_file.source is not defined")
	}
	if a, ok := archive.Body.Attributes["excludes"]; !ok || exprString(a.Expr) != "local.source_excludes" {
		t.Errorf("%s: excludes must be local.source_excludes", archive.DefRange())
	}

	ignored := gcloudignoreEntries(t)
	a, b := slices.Sorted(slices.Values(excludes)), slices.Sorted(slices.Values(ignored))
	if !slices.Equal(a, b) {
		t.Errorf("local.source_excludes and .gcloudignore differ:\n  source_excludes: %q\n  .gcloudignore:    %q", a, b)
	}

	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go is not on PATH: %v", err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(goBin, "list", "-e", "-deps", "-f", "{{.Dir}}", ".")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, stderr.Bytes())
	}
	checked := 0
	for _, dir := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, dir)
		if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			continue // the standard library or a module dependency
		}
		rel = filepath.ToSlash(rel)
		checked++
		for _, p := range slices.Concat(excludes, ignored) {
			if excludedBy(rel, p) {
				t.Errorf("the root package imports the package in %s, which the deploy source excludes (%q)", rel, p)
			}
		}
	}
	if checked < 2 {
		t.Errorf("go list -deps found %d packages of this module; want the root package and what it imports", checked)
	}
}

// TestReferencesResolve is the part of `terraform validate` that needs no
// provider: every var.X, local.X, data.T.N and T.N an expression names is
// declared in this directory.
func TestReferencesResolve(t *testing.T) {
	m := loadModule(t)
	vars := map[string]bool{}
	dynamicIterators := map[string]bool{}
	var collect func(body *hclsyntax.Body)
	collect = func(body *hclsyntax.Body) {
		for _, b := range body.Blocks {
			switch {
			case b.Type == "variable" && len(b.Labels) == 1:
				vars[b.Labels[0]] = true
			case b.Type == "dynamic" && len(b.Labels) == 1:
				dynamicIterators[b.Labels[0]] = true
			}
			collect(b.Body)
		}
	}
	for _, body := range m.bodies {
		collect(body)
	}

	checked := 0
	check := func(tr hcl.Traversal) error {
		checked++
		attr := func(i int) string {
			if i < len(tr) {
				if a, ok := tr[i].(hcl.TraverseAttr); ok {
					return a.Name
				}
			}
			return ""
		}
		root := tr.RootName()
		switch {
		case root == "var":
			if !vars[attr(1)] {
				return fmt.Errorf("var.%s is not declared", attr(1))
			}
		case root == "local":
			if _, ok := m.locals[attr(1)]; !ok {
				return fmt.Errorf("local.%s is not defined", attr(1))
			}
		case root == "data":
			if _, ok := m.resources["data."+attr(1)+"."+attr(2)]; !ok {
				return fmt.Errorf("data.%s.%s is not defined", attr(1), attr(2))
			}
		case root == "each" || root == "count" || root == "path" || root == "self" || root == "terraform" || dynamicIterators[root]:
		default:
			if _, ok := m.resources[root+"."+attr(1)]; !ok {
				return fmt.Errorf("%s is not a defined resource", traversalString(tr))
			}
		}
		return nil
	}
	// Type constraints (variable.type) and lifecycle arguments
	// (ignore_changes) name types and attributes, not objects.
	var walk func(body *hclsyntax.Body, blockType string)
	walk = func(body *hclsyntax.Body, blockType string) {
		for name, a := range body.Attributes {
			if blockType == "variable" && name == "type" {
				continue
			}
			for _, tr := range a.Expr.Variables() {
				if err := check(tr); err != nil {
					t.Errorf("%s: %v", tr.SourceRange(), err)
				}
			}
		}
		for _, b := range body.Blocks {
			if b.Type != "lifecycle" {
				walk(b.Body, b.Type)
			}
		}
	}
	for _, body := range m.bodies {
		walk(body, "")
	}
	if checked == 0 {
		t.Fatal("found no references at all")
	}
}

// TestPushRetryPoliciesMatchWire keeps each push subscription's retry and
// dead-letter policies equal to the ones internal/wire declares for its
// embedded twin (and that keyplane serve uses), so that what the tests
// exercise is what production does. internal/notify's retry schedule depends on
// them: its first retry is the minimum backoff, and the maximum deliveries
// must outlast its longest gap.
func TestPushRetryPoliciesMatchWire(t *testing.T) {
	m := loadModule(t)
	for _, tc := range []struct {
		sub  string
		want queue.RetryPolicy
	}{
		{"usage_record", wire.UsageTopic.Retry},
		{"notifications_deliver", wire.NotificationsTopic.Retry},
		{"usage_export_stripe", wire.StripeExportTopic.Retry},
	} {
		b, ok := m.resources["google_pubsub_subscription."+tc.sub]
		if !ok {
			t.Errorf("google_pubsub_subscription.%s is not defined", tc.sub)
			continue
		}
		literal := func(block, attr string) (cty.Value, bool) {
			bs := blocks(b.Body, block)
			if len(bs) != 1 {
				t.Errorf("%s: want one %s block", b.DefRange(), block)
				return cty.NilVal, false
			}
			a, ok := bs[0].Body.Attributes[attr]
			if !ok {
				t.Errorf("%s: %s sets no %s", bs[0].DefRange(), block, attr)
				return cty.NilVal, false
			}
			v, diags := a.Expr.Value(nil)
			if diags.HasErrors() || !v.IsKnown() || v.IsNull() {
				t.Errorf("%s: %s.%s must be a literal", a.SrcRange, block, attr)
				return cty.NilVal, false
			}
			return v, true
		}
		duration := func(attr string) time.Duration {
			v, ok := literal("retry_policy", attr)
			if !ok {
				return -1
			}
			if v.Type() != cty.String {
				t.Errorf("google_pubsub_subscription.%s: retry_policy.%s is not a string", tc.sub, attr)
				return -1
			}
			d, err := time.ParseDuration(v.AsString())
			if err != nil {
				t.Errorf("google_pubsub_subscription.%s: retry_policy.%s is not a duration like \"10s\"", tc.sub, attr)
				return -1
			}
			return d
		}
		attempts := -1
		if v, ok := literal("dead_letter_policy", "max_delivery_attempts"); ok && v.Type() == cty.Number {
			n, _ := v.AsBigFloat().Int64()
			attempts = int(n)
		}
		got := queue.RetryPolicy{MinBackoff: duration("minimum_backoff"), MaxBackoff: duration("maximum_backoff"), MaxAttempts: attempts}
		if got != tc.want {
			t.Errorf("google_pubsub_subscription.%s: retry %v–%v, dead letter after %d deliveries; internal/wire declares %v–%v and %d",
				tc.sub, got.MinBackoff, got.MaxBackoff, got.MaxAttempts, tc.want.MinBackoff, tc.want.MaxBackoff, tc.want.MaxAttempts)
		}
	}
}

// TestGatedFunctionsReferencedOnlyWhenDeployed: a function that only some
// configurations deploy (plannedEntryPoints) may be named directly
// (local.functions.<name>, or an index into a resource with for_each =
// local.functions) only inside a resource whose count or for_each depends
// on its variable; anywhere else the plan fails when it is off.
func TestGatedFunctionsReferencedOnlyWhenDeployed(t *testing.T) {
	m := loadModule(t)
	cs := configs(t, m)
	always := functionEntries(t, m, cs[0].vars)
	gateOf := map[string]string{} // short name → variable
	for name, fn := range allFunctionEntries(t, m) {
		if _, ok := always[name]; ok {
			continue
		}
		ep, _ := literalString(fn["entry_point"])
		gate, ok := plannedEntryPoints[ep]
		if !ok {
			t.Errorf("local.functions.%s is not deployed by default, but its entry point %q is not in plannedEntryPoints", name, ep)
			continue
		}
		gateOf[name] = gate
	}
	if len(gateOf) == 0 {
		return
	}
	perFunction := map[string]bool{} // "type.name" of resources with for_each = local.functions
	for key, b := range m.resources {
		if a, ok := b.Body.Attributes["for_each"]; ok && exprString(a.Expr) == "local.functions" {
			perFunction[key] = true
		}
	}
	// named returns the function a traversal names directly, if any.
	named := func(tr hcl.Traversal) string {
		if len(tr) < 3 {
			return ""
		}
		a, ok := tr[1].(hcl.TraverseAttr)
		if !ok {
			return ""
		}
		if tr.RootName() == "local" && a.Name == "functions" || perFunction[tr.RootName()+"."+a.Name] {
			switch s := tr[2].(type) {
			case hcl.TraverseAttr:
				return s.Name
			case hcl.TraverseIndex:
				if s.Key.Type() == cty.String {
					return s.Key.AsString()
				}
			}
		}
		return ""
	}
	var refs func(body *hclsyntax.Body, fn func(hcl.Traversal))
	refs = func(body *hclsyntax.Body, fn func(hcl.Traversal)) {
		for _, a := range body.Attributes {
			for _, tr := range a.Expr.Variables() {
				fn(tr)
			}
		}
		for _, b := range body.Blocks {
			refs(b.Body, fn)
		}
	}
	seen := 0
	for _, body := range m.bodies {
		for _, b := range body.Blocks {
			guards := map[string]bool{} // variables the block's count / for_each use
			if b.Type == "resource" || b.Type == "data" {
				for _, arg := range []string{"count", "for_each"} {
					if a, ok := b.Body.Attributes[arg]; ok {
						for _, tr := range a.Expr.Variables() {
							if tr.RootName() == "var" && len(tr) > 1 {
								if at, ok := tr[1].(hcl.TraverseAttr); ok {
									guards[at.Name] = true
								}
							}
						}
					}
				}
			}
			refs(b.Body, func(tr hcl.Traversal) {
				name := named(tr)
				gate, ok := gateOf[name]
				if !ok {
					return
				}
				seen++
				if !guards[gate] {
					t.Errorf("%s: %s names function %s, which is deployed only with var.%s; put it in a resource with count = var.%s ? 1 : 0", tr.SourceRange(), traversalString(tr), name, gate, gate)
				}
			})
		}
	}
	t.Logf("%d reference(s) to gated functions %v", seen, slices.Sorted(maps.Keys(gateOf)))
}

// providerVersions are, per provider, the oldest release with everything
// infra/ uses (why, in versions.tf), the release infra/ was last validated
// against with the real provider schema, and the next major release, which
// may break it. The bounds in versions.tf must admit the validated release
// and refuse the one before the oldest and the next major.
var providerVersions = map[string]struct{ before, validated, nextMajor string }{
	"google":  {before: "5.45.0", validated: "7.45.0", nextMajor: "8.0.0"},
	"random":  {before: "3.5.1", validated: "3.9.0", nextMajor: "4.0.0"}, // random_bytes: 3.6
	"archive": {before: "2.4.2", validated: "2.8.0", nextMajor: "3.0.0"}, // glob excludes: 2.5
}

func TestProviderVersionBoundsHold(t *testing.T) {
	m := loadModule(t)
	var tf *hclsyntax.Block
	for _, b := range m.bodies["versions.tf"].Blocks {
		if b.Type == "terraform" {
			tf = b
		}
	}
	if tf == nil {
		t.Fatal("versions.tf has no terraform block")
	}
	if a, ok := tf.Body.Attributes["required_version"]; !ok {
		t.Error("versions.tf sets no required_version")
	} else if c, _ := literalString(a.Expr); !strings.Contains(c, "<") {
		t.Errorf("required_version %q has no upper bound", c)
	}
	seen := map[string]bool{}
	for _, b := range tf.Body.Blocks {
		if b.Type != "required_providers" {
			continue
		}
		for name, a := range b.Body.Attributes {
			seen[name] = true
			want, ok := providerVersions[name]
			if !ok {
				t.Errorf("provider %s has no entry in providerVersions: add its oldest usable, validated and next major release", name)
				continue
			}
			c, ok := literalString(objectItems(t, a.Expr, "required_providers."+name)["version"])
			if !ok {
				t.Errorf("provider %s: version is not a literal string", name)
				continue
			}
			for v, admit := range map[string]bool{want.before: false, want.validated: true, want.nextMajor: false} {
				got, err := admits(c, v)
				if err != nil {
					t.Errorf("provider %s: %v", name, err)
				} else if got != admit {
					t.Errorf("provider %s: version constraint %q admits %s = %v, want %v", name, c, v, got, admit)
				}
			}
		}
	}
	for name := range providerVersions {
		if !seen[name] {
			t.Errorf("provider %s is not in required_providers", name)
		}
	}
}

func TestAdmits(t *testing.T) {
	for _, tc := range []struct {
		c, v string
		want bool
	}{
		{">= 3.6, < 4.0", "3.6.0", true},
		{">= 3.6, < 4.0", "3.5.9", false},
		{">= 3.6, < 4.0", "4.0.0", false},
		{">= 3.6, < 4.0", "3.10.1", true},
		{"~> 2.5", "2.9.0", true},
		{"~> 2.5", "3.0.0", false},
		{"= 7.45.0", "7.45.0", true},
	} {
		if got, err := admits(tc.c, tc.v); err != nil || got != tc.want {
			t.Errorf("admits(%q, %q) = %v, %v; want %v", tc.c, tc.v, got, err, tc.want)
		}
	}
}

// admits reports whether Terraform's version constraint c (comma-separated
// ">=", ">", "<=", "<", "=", "!=" and "~>" terms) admits release v.
func admits(c, v string) (bool, error) {
	rv, err := parseVersion(v)
	if err != nil {
		return false, err
	}
	for _, term := range strings.Split(c, ",") {
		term = strings.TrimSpace(term)
		op := strings.TrimRight(term, "0123456789. ")
		bound, err := parseVersion(strings.TrimSpace(strings.TrimPrefix(term, op)))
		if err != nil {
			return false, fmt.Errorf("constraint %q: %v", c, err)
		}
		cmp := slices.Compare(rv.v[:], bound.v[:])
		var ok bool
		switch strings.TrimSpace(op) {
		case ">=":
			ok = cmp >= 0
		case ">":
			ok = cmp > 0
		case "<=":
			ok = cmp <= 0
		case "<":
			ok = cmp < 0
		case "=", "":
			ok = cmp == 0
		case "!=":
			ok = cmp != 0
		case "~>": // the rightmost given part may grow
			upper := bound.v
			i := max(bound.parts-2, 0)
			upper[i]++
			for j := i + 1; j < 3; j++ {
				upper[j] = 0
			}
			ok = cmp >= 0 && slices.Compare(rv.v[:], upper[:]) < 0
		default:
			return false, fmt.Errorf("constraint %q: unknown operator %q", c, op)
		}
		if !ok {
			return false, nil
		}
	}
	return true, nil
}

type version struct {
	v     [3]int
	parts int
}

func parseVersion(s string) (version, error) {
	fields := strings.Split(s, ".")
	if len(fields) > 3 || s == "" {
		return version{}, fmt.Errorf("version %q is not MAJOR[.MINOR[.PATCH]]", s)
	}
	var out version
	for i, f := range fields {
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return version{}, fmt.Errorf("version %q is not MAJOR[.MINOR[.PATCH]]", s)
		}
		out.v[i] = n
	}
	out.parts = len(fields)
	return out, nil
}

// TestOnlyTheFacesAreThePublicPages: the Faces function, which serves the
// console and the portal to browsers, is invokable by allUsers; the Keys
// function, the management API, never is (its invokers come from
// var.keys_invokers, whose validation refuses allUsers); Faces' account
// holds nothing the pages do not use: no owner webhook secret, no
// webhook secret or verify token, no usage topic; and the Keys function
// names the Faces function in its portal links.
func TestOnlyTheFacesAreThePublicPages(t *testing.T) {
	m := loadModule(t)
	for _, c := range configs(t, m) {
		fns := functionEntries(t, m, c.vars)
		faces, ok := fns["faces"]
		if !ok {
			t.Fatalf("[%s] local.functions has no faces entry", c.name)
		}
		if ep, _ := literalString(faces["entry_point"]); ep != "Faces" {
			t.Errorf("[%s] local.functions.faces.entry_point = %q, want Faces", c.name, ep)
		}
		if got := literalStrings(t, faces["invokers"], "local.functions.faces.invokers"); !slices.Equal(got, []string{"allUsers"}) {
			t.Errorf("[%s] local.functions.faces.invokers = %q, want [allUsers]: browsers cannot pass IAM", c.name, got)
		}
		want := map[string][]string{
			"project_roles":              {"roles/datastore.user"},
			"key_secret_roles":           {"key_secret_console", "key_secret_creator"},
			"owner_webhook_secret_roles": nil,
			"named_secrets":              {"admin-token", "pepper"},
			"publishes_to":               {"notifications"},
		}
		for attr, w := range want {
			got := literalStrings(t, faces[attr], "local.functions.faces."+attr)
			sort.Strings(got)
			if !slices.Equal(got, w) {
				t.Errorf("[%s] local.functions.faces.%s = %q, want %q", c.name, attr, got, w)
			}
		}

		keys := fns["keys"]
		if e := exprString(keys["invokers"]); e != "var.keys_invokers" {
			t.Errorf("[%s] local.functions.keys.invokers = %s, want var.keys_invokers", c.name, e)
		}
		if v := c.vars["keys_invokers"]; v.IsKnown() && !v.IsNull() {
			for _, member := range v.AsValueSlice() {
				if s := member.AsString(); s == "allUsers" || s == "allAuthenticatedUsers" {
					t.Errorf("[%s] var.keys_invokers holds %s: the management API must stay behind IAM", c.name, s)
				}
			}
		}
		env, err := envKeys(m, keys["env"], keys)
		if err != nil {
			t.Fatal(err)
		}
		if e, ok := env["KEYPLANE_PORTAL_URL"]; !ok || exprString(e) != "local.faces_url" {
			t.Errorf("[%s] local.functions.keys.env must set KEYPLANE_PORTAL_URL = local.faces_url, so that portal links open on Faces", c.name)
		}
		for name, fn := range fns {
			if name == "faces" || name == "usage-webhook" || name == "leak-reports" {
				continue // public: their signatures or sign-in authenticate
			}
			if name == "verify" {
				continue // public only with var.public_verify
			}
			if e, ok := fn["invokers"].(*hclsyntax.TupleConsExpr); ok {
				for _, it := range e.Exprs {
					if s, _ := literalString(it); s == "allUsers" || s == "allAuthenticatedUsers" {
						t.Errorf("[%s] local.functions.%s is invokable by %s", c.name, name, s)
					}
				}
			}
		}
	}

	// var.keys_invokers refuses allUsers.
	var v *hclsyntax.Block
	for _, body := range m.bodies {
		for _, b := range body.Blocks {
			if b.Type == "variable" && len(b.Labels) == 1 && b.Labels[0] == "keys_invokers" {
				v = b
			}
		}
	}
	if v == nil {
		t.Fatal("variable keys_invokers is not defined")
	}
	var validated bool
	for _, b := range blocks(v.Body, "validation") {
		if a, ok := b.Body.Attributes["condition"]; ok {
			src := string(a.Expr.Range().SliceBytes(m.files[a.Expr.Range().Filename]))
			validated = validated || (strings.Contains(src, `"allUsers"`) && strings.Contains(src, `"allAuthenticatedUsers"`))
		}
	}
	if !validated {
		t.Errorf("variable keys_invokers has no validation refusing allUsers and allAuthenticatedUsers")
	}

	// The faces_url local names the faces function's Cloud Run service.
	src := string(m.local(t, "faces_url").Range().SliceBytes(m.files[m.local(t, "faces_url").Range().Filename]))
	if !strings.Contains(src, "${var.name_prefix}faces-") || !strings.Contains(src, "var.faces_url") {
		t.Errorf("local.faces_url = %s, want var.faces_url or the run.app URL of ${var.name_prefix}faces", src)
	}
}
