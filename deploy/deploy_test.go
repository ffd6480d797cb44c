// Package deploy_test checks the files in deploy/ that cannot run here:
// every manifest is parsed (all documents) and the settings a fleet depends
// on are checked in each format — three etcd members, TLS for clients and
// peers with client certificate auth, certificates mounted where the flags
// say, one member per node, probes, resources — and every COORD_* name is
// one the CLI reads. The systemd units go through `systemd-analyze verify`
// where it is installed. deploy/local-cluster.sh is tested by
// `make integration-cluster`, not here.
package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// members is the size of every cluster in deploy/.
const members = 3

// notCLI are COORD_* names in deploy/ that are not coord's: the local
// cluster script's own settings.
var notCLI = []string{"COORD_CLUSTER_DIR", "COORD_CLUSTER_PORT"}

// etcdTLSFiles are the flags that name a certificate, key or CA file.
var etcdTLSFiles = []string{
	"cert-file", "key-file", "trusted-ca-file",
	"peer-cert-file", "peer-key-file", "peer-trusted-ca-file",
}

// checkEtcdMember checks one member's settings, flag name (without "--")
// to value, whichever format they came from.
func checkEtcdMember(t *testing.T, where string, cfg map[string]string) {
	t.Helper()
	for _, f := range append([]string{
		"name", "data-dir", "listen-client-urls", "advertise-client-urls",
		"listen-peer-urls", "initial-advertise-peer-urls", "initial-cluster",
		"initial-cluster-token",
	}, etcdTLSFiles...) {
		if cfg[f] == "" {
			t.Errorf("%s: etcd setting %s is missing", where, f)
		}
	}
	for _, f := range []string{"client-cert-auth", "peer-client-cert-auth"} {
		if cfg[f] != "true" {
			t.Errorf("%s: etcd setting %s = %q, want true", where, f, cfg[f])
		}
	}
	for _, f := range []string{"listen-client-urls", "advertise-client-urls", "listen-peer-urls", "initial-advertise-peer-urls"} {
		for _, u := range splitList(cfg[f]) {
			if !strings.HasPrefix(u, "https://") {
				t.Errorf("%s: etcd setting %s has %q, want https", where, f, u)
			}
		}
	}
	cluster := parseInitialCluster(t, where, cfg["initial-cluster"])
	if len(cluster) != members {
		t.Errorf("%s: initial-cluster has %d members, want %d: %q", where, len(cluster), members, cfg["initial-cluster"])
	}
	// A member's own entry must be the peer URL it advertises, or the
	// others cannot reach it (for Kubernetes the name is $(POD_NAME) and
	// is checked against the StatefulSet instead).
	if own, ok := cluster[cfg["name"]]; ok && own != cfg["initial-advertise-peer-urls"] {
		t.Errorf("%s: initial-cluster gives %s as %q, but it advertises %q", where, cfg["name"], own, cfg["initial-advertise-peer-urls"])
	}
	for name, u := range cluster {
		if !strings.HasPrefix(u, "https://") {
			t.Errorf("%s: initial-cluster member %s at %q, want https", where, name, u)
		}
	}
}

// parseInitialCluster reads name=url,name=url.
func parseInitialCluster(t *testing.T, where, s string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, e := range splitList(s) {
		name, u, ok := strings.Cut(e, "=")
		if !ok || name == "" || u == "" {
			t.Errorf("%s: initial-cluster entry %q is not name=url", where, e)
			continue
		}
		if _, dup := m[name]; dup {
			t.Errorf("%s: initial-cluster names %s twice", where, name)
		}
		m[name] = u
	}
	return m
}

func splitList(s string) []string {
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// checkCoordClient checks coord's client settings, variable to value.
func checkCoordClient(t *testing.T, where string, env map[string]string) {
	t.Helper()
	cli := cliEnv(t)
	for k := range env {
		if !cli[k] {
			t.Errorf("%s: %s is not a variable coord reads", where, k)
		}
	}
	if env["COORD_BACKEND"] != "etcd" {
		t.Errorf("%s: COORD_BACKEND = %q, want etcd", where, env["COORD_BACKEND"])
	}
	eps := splitList(env["COORD_ETCD_ENDPOINTS"])
	if len(eps) != members {
		t.Errorf("%s: COORD_ETCD_ENDPOINTS has %d endpoints, want all %d members: %q", where, len(eps), members, env["COORD_ETCD_ENDPOINTS"])
	}
	for _, e := range eps {
		if u, err := url.Parse(e); err != nil || u.Scheme != "https" || u.Port() == "" {
			t.Errorf("%s: endpoint %q: want https://host:port", where, e)
		}
	}
	// The CLI's own rules for these values (internal/coordcli).
	if ttl, err := time.ParseDuration(env["COORD_ETCD_TTL"]); err != nil || ttl < 2*time.Second || ttl%time.Second != 0 {
		t.Errorf("%s: COORD_ETCD_TTL = %q, want whole seconds, at least 2s", where, env["COORD_ETCD_TTL"])
	}
	if p := env["COORD_ETCD_PREFIX"]; !strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
		t.Errorf("%s: COORD_ETCD_PREFIX = %q, want a leading '/' and no trailing one", where, p)
	}
	for _, k := range []string{"COORD_ETCD_CACERT", "COORD_ETCD_CERT", "COORD_ETCD_KEY"} {
		if !path.IsAbs(env[k]) {
			t.Errorf("%s: %s = %q, want an absolute path", where, k, env[k])
		}
	}
}

var coordName = regexp.MustCompile(`\bCOORD_[A-Z0-9_]+`)

// cliEnv is every COORD_* name that internal/coordcli declares as a
// constant: the variables coord reads and those it sets for CMD.
func cliEnv(t *testing.T) map[string]bool {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join("..", "internal", "coordcli", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range af.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, s := range gd.Specs {
				for _, v := range s.(*ast.ValueSpec).Values {
					lit, ok := v.(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					if s, err := strconv.Unquote(lit.Value); err == nil && coordName.FindString(s) == s {
						names[s] = true
					}
				}
			}
		}
	}
	if !names["COORD_ETCD_ENDPOINTS"] || !names["COORD_ETCD_TTL"] {
		t.Fatalf("found no COORD_ETCD_* constants in internal/coordcli (got %v): has the CLI moved?", names)
	}
	return names
}

// TestCoordNames fails on a COORD_* name anywhere in deploy/ that coord
// does not know: a misspelt variable is silently ignored at run time.
func TestCoordNames(t *testing.T) {
	known := cliEnv(t)
	for _, n := range notCLI {
		known[n] = true
	}
	seen := map[string]int{}
	err := filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		// The script is another piece of work, with settings of its own;
		// the coord.env it writes is checked by make integration-cluster.
		if p == "local-cluster.sh" || strings.HasSuffix(p, ".go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			for _, n := range coordName.FindAllString(line, -1) {
				seen[p]++
				if !known[n] {
					t.Errorf("%s:%d: %s is not a variable coord reads or sets", p, i+1, n)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"systemd/coord.env", "k8s/coord-client.yaml"} {
		if seen[f] < 5 {
			t.Errorf("saw %d COORD_* names in %s: is the scan reading the files?", seen[f], f)
		}
	}
}

// object is the part of a Kubernetes object that these checks read.
type object struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string
	Metadata   struct {
		Name        string
		Labels      map[string]string
		Annotations map[string]string
	}
	Spec       yaml.Node
	Data       map[string]string
	StringData map[string]string `yaml:"stringData"`

	file string
}

type selector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type affinityTerm struct {
	TopologyKey   string   `yaml:"topologyKey"`
	LabelSelector selector `yaml:"labelSelector"`
}

type probe struct {
	HTTPGet *struct {
		Path string
		Port any
	} `yaml:"httpGet"`
}

type container struct {
	Name    string
	Image   string
	Command []string
	Args    []string
	Env     []struct {
		Name      string
		Value     string
		ValueFrom *struct {
			FieldRef *struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	}
	EnvFrom []struct {
		ConfigMapRef *struct{ Name string } `yaml:"configMapRef"`
	} `yaml:"envFrom"`
	Ports []struct {
		Name          string
		ContainerPort int `yaml:"containerPort"`
	}
	StartupProbe   *probe `yaml:"startupProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string
		Limits   map[string]string
	}
	VolumeMounts []struct {
		Name      string
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type podTemplate struct {
	Metadata struct{ Labels map[string]string }
	Spec     struct {
		Affinity struct {
			PodAntiAffinity *struct {
				Required  []affinityTerm `yaml:"requiredDuringSchedulingIgnoredDuringExecution"`
				Preferred []struct {
					PodAffinityTerm affinityTerm `yaml:"podAffinityTerm"`
				} `yaml:"preferredDuringSchedulingIgnoredDuringExecution"`
			} `yaml:"podAntiAffinity"`
		}
		Containers []container
		Volumes    []struct {
			Name   string
			Secret *struct {
				SecretName string `yaml:"secretName"`
			}
		}
	}
}

type statefulSetSpec struct {
	ServiceName          string `yaml:"serviceName"`
	Replicas             int
	PodManagementPolicy  string `yaml:"podManagementPolicy"`
	Selector             selector
	Template             podTemplate
	VolumeClaimTemplates []struct {
		Metadata struct{ Name string }
	} `yaml:"volumeClaimTemplates"`
}

type serviceSpec struct {
	ClusterIP                string `yaml:"clusterIP"`
	PublishNotReadyAddresses bool   `yaml:"publishNotReadyAddresses"`
	Selector                 map[string]string
	Ports                    []struct{ Port int }
}

type pdbSpec struct {
	MaxUnavailable any `yaml:"maxUnavailable"`
	Selector       selector
}

// manifests reads every document of every manifest in k8s/.
func manifests(t *testing.T) []*object {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("k8s", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var objs []*object
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		for _, n := range yamlDocs(t, f) {
			o := &object{file: f}
			if err := n.Decode(o); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
				t.Fatalf("%s: a document without apiVersion, kind or metadata.name", f)
			}
			objs = append(objs, o)
		}
	}
	return objs
}

// yamlDocs parses all documents of a YAML file; an empty file or one with
// no document is an error.
func yamlDocs(t *testing.T, file string) []*yaml.Node {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var docs []*yaml.Node
	for {
		n := new(yaml.Node)
		err := dec.Decode(n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		docs = append(docs, n)
	}
	if len(docs) == 0 {
		t.Fatalf("%s: no YAML document", file)
	}
	return docs
}

func find(objs []*object, kind, name string) *object {
	for _, o := range objs {
		if o.Kind == kind && o.Metadata.Name == name {
			return o
		}
	}
	return nil
}

func decodeSpec(t *testing.T, o *object, v any) {
	t.Helper()
	if err := o.Spec.Decode(v); err != nil {
		t.Fatalf("%s: %s %s: spec: %v", o.file, o.Kind, o.Metadata.Name, err)
	}
}

// selects reports whether every label the selector asks for is on the pod.
func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// secretFile checks that path lies in a volume mounted from a Secret that
// the manifests define and that holds the file's name as a key.
func secretFile(t *testing.T, objs []*object, pod podTemplate, c container, what, p string) {
	t.Helper()
	for _, m := range c.VolumeMounts {
		rel, err := filepath.Rel(m.MountPath, p)
		if err != nil || strings.HasPrefix(rel, "..") || strings.Contains(rel, "/") {
			continue
		}
		for _, v := range pod.Spec.Volumes {
			if v.Name != m.Name {
				continue
			}
			if v.Secret == nil {
				t.Errorf("%s %s is in volume %s, which is not a Secret", what, p, v.Name)
				return
			}
			s := find(objs, "Secret", v.Secret.SecretName)
			if s == nil {
				t.Errorf("%s %s: Secret %s is not in the manifests", what, p, v.Secret.SecretName)
				return
			}
			if _, ok := s.StringData[rel]; !ok {
				if _, ok := s.Data[rel]; !ok {
					t.Errorf("%s %s: Secret %s has no key %s", what, p, v.Secret.SecretName, rel)
				}
			}
			if !m.ReadOnly {
				t.Errorf("%s %s: volume %s is mounted read-write", what, p, v.Name)
			}
			return
		}
		t.Errorf("%s %s: volume %s is mounted but not defined", what, p, m.Name)
		return
	}
	t.Errorf("%s %s is in no volume mounted into container %s", what, p, c.Name)
}

// flagMap reads --name=value arguments.
func flagMap(t *testing.T, where string, args []string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, a := range args {
		name, v, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !ok {
			t.Errorf("%s: argument %q: want --flag=value", where, a)
			continue
		}
		m[name] = v
	}
	return m
}

func TestKubernetesEtcd(t *testing.T) {
	objs := manifests(t)
	sts := find(objs, "StatefulSet", "etcd")
	if sts == nil {
		t.Fatal("no StatefulSet etcd in k8s/")
	}
	var spec statefulSetSpec
	decodeSpec(t, sts, &spec)
	pod := spec.Template
	labels := pod.Metadata.Labels

	if spec.Replicas != members {
		t.Errorf("StatefulSet replicas = %d, want %d", spec.Replicas, members)
	}
	if spec.PodManagementPolicy != "Parallel" {
		t.Errorf("podManagementPolicy = %q, want Parallel: a member is ready only with a quorum, so OrderedReady never starts the second", spec.PodManagementPolicy)
	}
	if !selects(spec.Selector.MatchLabels, labels) {
		t.Errorf("StatefulSet selector %v does not select its pods %v", spec.Selector.MatchLabels, labels)
	}

	aa := pod.Spec.Affinity.PodAntiAffinity
	var terms []affinityTerm
	if aa != nil {
		terms = aa.Required
		for _, p := range aa.Preferred {
			terms = append(terms, p.PodAffinityTerm)
		}
	}
	if !slices.ContainsFunc(terms, func(a affinityTerm) bool {
		return a.TopologyKey == "kubernetes.io/hostname" && selects(a.LabelSelector.MatchLabels, labels)
	}) {
		t.Errorf("no podAntiAffinity term on kubernetes.io/hostname that selects the members: %+v", terms)
	}

	svc := find(objs, "Service", spec.ServiceName)
	if svc == nil {
		t.Fatalf("the StatefulSet's serviceName %q is not a Service in k8s/", spec.ServiceName)
	}
	var ss serviceSpec
	decodeSpec(t, svc, &ss)
	if ss.ClusterIP != "None" {
		t.Errorf("Service %s: clusterIP = %q, want None (headless)", spec.ServiceName, ss.ClusterIP)
	}
	if !ss.PublishNotReadyAddresses {
		t.Errorf("Service %s: publishNotReadyAddresses is off: members cannot resolve each other before they are ready", spec.ServiceName)
	}
	if !selects(ss.Selector, labels) {
		t.Errorf("Service %s: selector %v does not select the members %v", spec.ServiceName, ss.Selector, labels)
	}

	var pdbs int
	for _, o := range objs {
		if o.Kind != "PodDisruptionBudget" {
			continue
		}
		var p pdbSpec
		decodeSpec(t, o, &p)
		if !selects(p.Selector.MatchLabels, labels) {
			continue
		}
		pdbs++
		if fmt.Sprint(p.MaxUnavailable) != "1" {
			t.Errorf("PodDisruptionBudget %s: maxUnavailable = %v, want 1", o.Metadata.Name, p.MaxUnavailable)
		}
	}
	if pdbs != 1 {
		t.Errorf("%d PodDisruptionBudgets select the members, want 1", pdbs)
	}

	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers in the etcd pod, want 1", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	cfg := flagMap(t, "etcd container", c.Args)
	checkEtcdMember(t, "StatefulSet etcd", cfg)
	etcdFlagsKnown(t, "StatefulSet etcd", cfg)

	// --name is the pod's name, and the initial cluster is the
	// StatefulSet's pods at their stable names in the headless Service.
	for _, e := range c.Env {
		if e.Name == "POD_NAME" && (e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name") {
			t.Errorf("POD_NAME is not the pod's metadata.name")
		}
	}
	if cfg["name"] != "$(POD_NAME)" {
		t.Errorf("--name = %q, want $(POD_NAME)", cfg["name"])
	}
	host := func(member string) string { return member + "." + spec.ServiceName + "." }
	if !strings.HasPrefix(cfg["initial-advertise-peer-urls"], "https://"+host("$(POD_NAME)")) {
		t.Errorf("--initial-advertise-peer-urls = %q, want the pod's name in Service %s", cfg["initial-advertise-peer-urls"], spec.ServiceName)
	}
	cluster := parseInitialCluster(t, "StatefulSet", cfg["initial-cluster"])
	for i := range spec.Replicas {
		name := fmt.Sprintf("%s-%d", sts.Metadata.Name, i)
		u, ok := cluster[name]
		if !ok {
			t.Errorf("--initial-cluster has no member %s", name)
			continue
		}
		want := strings.Replace(cfg["initial-advertise-peer-urls"], "$(POD_NAME)", name, 1)
		if u != want {
			t.Errorf("--initial-cluster gives %s as %q, want %q (what that pod advertises)", name, u, want)
		}
	}

	for _, f := range etcdTLSFiles {
		secretFile(t, objs, pod, c, "--"+f, cfg[f])
	}

	// Probes go to the plain-HTTP metrics listener.
	metrics, err := url.Parse(cfg["listen-metrics-urls"])
	if err != nil || metrics.Scheme != "http" {
		t.Fatalf("--listen-metrics-urls = %q, want an http URL for the probes", cfg["listen-metrics-urls"])
	}
	for what, p := range map[string]*probe{"startupProbe": c.StartupProbe, "readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s: missing, or not an httpGet", what)
			continue
		}
		if !slices.Contains([]string{"/health", "/livez", "/readyz"}, strings.SplitN(p.HTTPGet.Path, "?", 2)[0]) {
			t.Errorf("%s: path %q is not one of etcd's health endpoints", what, p.HTTPGet.Path)
		}
		port := fmt.Sprint(p.HTTPGet.Port)
		for _, cp := range c.Ports {
			if cp.Name == port {
				port = strconv.Itoa(cp.ContainerPort)
			}
		}
		if port != metrics.Port() {
			t.Errorf("%s: port %v is not the metrics listener's %s", what, p.HTTPGet.Port, metrics.Port())
		}
	}
	if c.LivenessProbe != nil && c.LivenessProbe.HTTPGet != nil && strings.HasPrefix(c.LivenessProbe.HTTPGet.Path, "/readyz") {
		t.Errorf("livenessProbe on /readyz restarts every member when the cluster has no leader")
	}

	for _, r := range []string{"cpu", "memory"} {
		if c.Resources.Requests[r] == "" {
			t.Errorf("etcd container: no %s request", r)
		}
	}
	if c.Resources.Limits["memory"] == "" {
		t.Errorf("etcd container: no memory limit")
	}

	dataMounted := false
	for _, m := range c.VolumeMounts {
		rel, err := filepath.Rel(m.MountPath, cfg["data-dir"])
		if err == nil && !strings.HasPrefix(rel, "..") && slices.ContainsFunc(spec.VolumeClaimTemplates, func(v struct{ Metadata struct{ Name string } }) bool {
			return v.Metadata.Name == m.Name
		}) {
			dataMounted = true
		}
	}
	if !dataMounted {
		t.Errorf("--data-dir %q is not on a volumeClaimTemplates volume", cfg["data-dir"])
	}
}

func TestKubernetesClient(t *testing.T) {
	objs := manifests(t)
	cm := find(objs, "ConfigMap", "coord-client")
	if cm == nil {
		t.Fatal("no ConfigMap coord-client in k8s/")
	}
	checkCoordClient(t, "ConfigMap coord-client", cm.Data)

	// The endpoints are the StatefulSet's members in the namespace that
	// kustomization.yaml puts them in.
	var sts statefulSetSpec
	decodeSpec(t, find(objs, "StatefulSet", "etcd"), &sts)
	ns := kustomization(t).Namespace
	var want []string
	for i := range sts.Replicas {
		want = append(want, fmt.Sprintf("https://etcd-%d.%s.%s.svc.cluster.local:2379", i, sts.ServiceName, ns))
	}
	if got := splitList(cm.Data["COORD_ETCD_ENDPOINTS"]); !slices.Equal(got, want) {
		t.Errorf("COORD_ETCD_ENDPOINTS = %q, want the members %q", got, want)
	}

	jobs := 0
	for _, o := range objs {
		if o.Kind != "Job" {
			continue
		}
		jobs++
		var spec struct{ Template podTemplate }
		decodeSpec(t, o, &spec)
		for _, c := range spec.Template.Spec.Containers {
			if !slices.ContainsFunc(c.EnvFrom, func(e struct {
				ConfigMapRef *struct{ Name string } `yaml:"configMapRef"`
			}) bool {
				return e.ConfigMapRef != nil && e.ConfigMapRef.Name == cm.Metadata.Name
			}) {
				t.Errorf("Job %s: container %s does not take envFrom ConfigMap %s", o.Metadata.Name, c.Name, cm.Metadata.Name)
			}
			for _, k := range []string{"COORD_ETCD_CACERT", "COORD_ETCD_CERT", "COORD_ETCD_KEY"} {
				secretFile(t, objs, spec.Template, c, k, cm.Data[k])
			}
		}
	}
	if jobs == 0 {
		t.Error("no example Job in k8s/")
	}
}

type kustomize struct {
	Namespace string
	Resources []string
}

func kustomization(t *testing.T) kustomize {
	t.Helper()
	var k kustomize
	if err := yamlDocs(t, filepath.Join("k8s", "kustomization.yaml"))[0].Decode(&k); err != nil {
		t.Fatal(err)
	}
	return k
}

// TestKustomization: `kubectl apply -k` applies exactly the manifests
// that the other tests check.
func TestKustomization(t *testing.T) {
	k := kustomization(t)
	files, err := filepath.Glob(filepath.Join("k8s", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" {
			want = append(want, b)
		}
	}
	got := slices.Sorted(slices.Values(k.Resources))
	if !slices.Equal(got, want) {
		t.Errorf("kustomization.yaml resources = %q, want every manifest in k8s/: %q", got, want)
	}
	if k.Namespace == "" {
		t.Error("kustomization.yaml sets no namespace")
	}
	if find(manifests(t), "Namespace", k.Namespace) == nil {
		t.Errorf("Namespace %s is not in the manifests", k.Namespace)
	}
}

type composeService struct {
	Image       string
	Command     []string
	Environment map[string]string
	Ports       []string
	Volumes     []string
}

func TestCompose(t *testing.T) {
	var f struct {
		Services map[string]composeService
		Volumes  map[string]any
	}
	if err := yamlDocs(t, "compose.yaml")[0].Decode(&f); err != nil {
		t.Fatal(err)
	}
	var names []string
	for name, s := range f.Services {
		if strings.Contains(s.Image, "etcd") {
			names = append(names, name)
		}
	}
	if len(names) != members {
		t.Fatalf("compose.yaml has %d etcd services, want %d: %q", len(names), members, names)
	}
	hostPorts := map[string]bool{}
	for _, name := range names {
		s := f.Services[name]
		where := "compose service " + name
		cfg := map[string]string{}
		for k, v := range s.Environment {
			if !strings.HasPrefix(k, "ETCD_") {
				t.Errorf("%s: variable %s is not etcd's", where, k)
				continue
			}
			cfg[strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(k, "ETCD_")), "_", "-")] = v
		}
		checkEtcdMember(t, where, cfg)
		etcdFlagsKnown(t, where, cfg)
		if cfg["name"] != name {
			t.Errorf("%s: ETCD_NAME = %q, want the service name", where, cfg["name"])
		}
		if got := parseInitialCluster(t, where, cfg["initial-cluster"]); !slices.Equal(slices.Sorted(maps.Keys(got)), slices.Sorted(slices.Values(names))) {
			t.Errorf("%s: ETCD_INITIAL_CLUSTER names %q, want the services %q", where, slices.Sorted(maps.Keys(got)), names)
		}

		// Certificates come from a read-only bind mount, data from a
		// named volume.
		mounts := map[string]string{}
		for _, v := range s.Volumes {
			parts := strings.Split(v, ":")
			if len(parts) < 2 {
				t.Errorf("%s: volume %q: want SOURCE:TARGET", where, v)
				continue
			}
			mounts[parts[1]] = v
		}
		for _, fl := range etcdTLSFiles {
			v, ok := mounts[path.Dir(cfg[fl])]
			if !ok {
				t.Errorf("%s: %s %q is in no mounted volume", where, fl, cfg[fl])
			} else if !strings.HasSuffix(v, ":ro") {
				t.Errorf("%s: certificates mounted read-write: %q", where, v)
			}
		}
		data := false
		for target, v := range mounts {
			src := strings.Split(v, ":")[0]
			if _, named := f.Volumes[src]; named && strings.HasPrefix(cfg["data-dir"], target+"/") {
				data = true
			}
		}
		if !data {
			t.Errorf("%s: data dir %q is not on a named volume", where, cfg["data-dir"])
		}
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s: port %q is published beyond loopback", where, p)
			}
			hostPorts[strings.Split(p, ":")[1]] = true
		}
	}
	if len(hostPorts) != members {
		t.Errorf("compose.yaml publishes client ports %v, want one per member", slices.Sorted(maps.Keys(hostPorts)))
	}
}

// etcdFlags is every flag that the installed etcd accepts, or nil when
// there is none (Debian's 3.4 here; the flags deploy/ uses are in 3.4,
// 3.5 and 3.6 alike).
func etcdFlags(t *testing.T) map[string]bool {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, bin, "--help").CombinedOutput() // 3.4 exits 0, later versions 2
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+--([a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if !flags["initial-cluster"] {
		t.Fatalf("etcd --help lists no --initial-cluster:\n%s", out)
	}
	return flags
}

// etcdFlagsKnown fails on a setting that etcd does not have: etcd stops on
// an unknown flag but only logs an unknown ETCD_* variable.
func etcdFlagsKnown(t *testing.T, where string, cfg map[string]string) {
	t.Helper()
	flags := etcdFlags(t)
	if flags == nil {
		t.Logf("no etcd on PATH: flag names of %s not checked", where)
		return
	}
	for f := range cfg {
		if !flags[f] {
			t.Errorf("%s: etcd has no flag --%s", where, f)
		}
	}
}

// readEnvFile reads KEY=VALUE lines as systemd's EnvironmentFile= does
// for these files (no quoting in them).
func readEnvFile(t *testing.T, file string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.ContainsAny(v, `"'$\`) {
			t.Errorf("%s:%d: %q: want KEY=VALUE without quotes or expansions", file, n, line)
			continue
		}
		if _, dup := env[k]; dup {
			t.Errorf("%s:%d: %s set twice", file, n, k)
		}
		env[k] = v
	}
	return env
}

// readUnit reads a unit file's settings, section to key to values.
func readUnit(t *testing.T, file string) map[string]map[string][]string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	u := map[string]map[string][]string{}
	var sec string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			sec = strings.Trim(line, "[]")
			u[sec] = map[string][]string{}
		default:
			k, v, _ := strings.Cut(line, "=")
			u[sec][k] = append(u[sec][k], v)
		}
	}
	return u
}

func TestSystemdEtcdMember(t *testing.T) {
	env := readEnvFile(t, filepath.Join("systemd", "etcd-member.env"))
	cfg := map[string]string{}
	for k, v := range env {
		if !strings.HasPrefix(k, "ETCD_") {
			t.Errorf("etcd-member.env: %s is not etcd's", k)
			continue
		}
		cfg[strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(k, "ETCD_")), "_", "-")] = v
	}
	checkEtcdMember(t, "etcd-member.env", cfg)
	etcdFlagsKnown(t, "etcd-member.env", cfg)

	svc := readUnit(t, filepath.Join("systemd", "etcd-member.service"))["Service"]
	want := map[string]string{
		"Type":            "notify",
		"NoNewPrivileges": "yes",
		"ProtectSystem":   "strict",
		"Restart":         "on-failure",
		"LimitNOFILE":     "65536",
	}
	for k, v := range want {
		if got := svc[k]; len(got) != 1 || got[0] != v {
			t.Errorf("etcd-member.service: %s = %q, want %q", k, got, v)
		}
	}
	if u := svc["User"]; len(u) != 1 || u[0] == "" || u[0] == "root" {
		t.Errorf("etcd-member.service: User = %q, want a dedicated user", u)
	}
	if ef := svc["EnvironmentFile"]; len(ef) != 1 || path.Base(ef[0]) != "etcd-member.env" {
		t.Errorf("etcd-member.service: EnvironmentFile = %q, want .../etcd-member.env", ef)
	}
	writable := false
	for _, p := range strings.Fields(strings.Join(svc["ReadWritePaths"], " ")) {
		if cfg["data-dir"] == p || strings.HasPrefix(cfg["data-dir"], strings.TrimSuffix(p, "/")+"/") {
			writable = true
		}
	}
	if !writable {
		t.Errorf("ETCD_DATA_DIR %q is not under ReadWritePaths %q: ProtectSystem=strict makes it read-only", cfg["data-dir"], svc["ReadWritePaths"])
	}
	// Flags on ExecStart would shadow the env file's settings.
	if e := svc["ExecStart"]; len(e) != 1 || len(strings.Fields(e[0])) != 1 {
		t.Errorf("etcd-member.service: ExecStart = %q, want the binary alone (settings in the env file)", e)
	}
}

func TestSystemdCoordClient(t *testing.T) {
	env := readEnvFile(t, filepath.Join("systemd", "coord.env"))
	checkCoordClient(t, "coord.env", env)
	dropIn := readUnit(t, filepath.Join("systemd", "ci-runner.service.d", "coord.conf"))
	if ef := dropIn["Service"]["EnvironmentFile"]; len(ef) != 1 || path.Base(ef[0]) != "coord.env" {
		t.Errorf("ci-runner.service.d/coord.conf: EnvironmentFile = %q, want .../coord.env", ef)
	}
}

// TestSystemdVerify runs `systemd-analyze verify` on the units.
//
// verify refuses a unit whose ExecStart binary does not exist, and etcd
// need not be installed where the tests run (nor the CI runner the drop-in
// is for): the units are copied into a temporary directory with the
// binary replaced by this test's own executable, which always exists; the
// rest of each unit is verified as written. The drop-in is verified on a
// stub ci-runner.service beside it. verify only warns, exit status 0, on
// an unknown key or section, so any line it prints about these files fails
// the test; a planted unknown key first proves that such lines are seen.
func TestSystemdVerify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("no systemd-analyze on PATH")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join("systemd", "etcd-member.service"))
	if err != nil {
		t.Fatal(err)
	}
	execStart := regexp.MustCompile(`(?m)^ExecStart=(\S+)`)
	if !execStart.Match(src) {
		t.Fatal("etcd-member.service has no ExecStart")
	}
	unit := execStart.ReplaceAll(src, []byte("ExecStart="+self))
	dropIn, err := os.ReadFile(filepath.Join("systemd", "ci-runner.service.d", "coord.conf"))
	if err != nil {
		t.Fatal(err)
	}

	verify := func(t *testing.T, dropIn []byte) string {
		dir := t.TempDir()
		write := func(name string, b []byte) {
			if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		write("etcd-member.service", unit)
		write("ci-runner.service", []byte("[Unit]\nDescription=stub CI runner\n\n[Service]\nExecStart="+self+"\n"))
		write("ci-runner.service.d/coord.conf", dropIn)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// The paths are given as ./NAME so that verify loads these files
		// (and the drop-in beside them), not units of the same name.
		cmd := exec.CommandContext(ctx, "systemd-analyze", "verify", "--man=no", "./etcd-member.service", "./ci-runner.service")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		var ours []string
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, dir) || strings.Contains(line, "etcd-member.service") || strings.Contains(line, "ci-runner.service") || strings.Contains(line, "coord.conf") {
				ours = append(ours, line)
			}
		}
		if err != nil {
			ours = append(ours, fmt.Sprintf("systemd-analyze verify: %v\n%s", err, out))
		}
		return strings.Join(ours, "\n")
	}

	if msg := verify(t, append(slices.Clip(dropIn), "NoSuchSetting=1\n"...)); !strings.Contains(msg, "NoSuchSetting") {
		t.Fatalf("systemd-analyze verify did not report a key planted in the drop-in; it cannot be trusted to check these files:\n%s", msg)
	}
	if msg := verify(t, dropIn); msg != "" {
		t.Errorf("systemd-analyze verify:\n%s", msg)
	}
}

// TestKubernetesExporter: the exporter's Deployment runs `coord exporter`
// with the client settings and certificate, listens on the port its
// probes and Service use (non-loopback, so with --insecure-listen or
// TLS, as the CLI demands), and Prometheus finds it.
func TestKubernetesExporter(t *testing.T) {
	objs := manifests(t)
	d := find(objs, "Deployment", "coord-exporter")
	if d == nil {
		t.Fatal("no Deployment coord-exporter in k8s/")
	}
	var spec struct {
		Replicas int
		Selector selector
		Template podTemplate
	}
	decodeSpec(t, d, &spec)
	if spec.Replicas != 1 {
		t.Errorf("Deployment coord-exporter: %d replicas, want 1 (each would watch the prefix)", spec.Replicas)
	}
	if !selects(spec.Selector.MatchLabels, spec.Template.Metadata.Labels) {
		t.Errorf("Deployment coord-exporter: selector %v does not select its pods %v", spec.Selector.MatchLabels, spec.Template.Metadata.Labels)
	}
	if len(spec.Template.Spec.Containers) != 1 {
		t.Fatalf("Deployment coord-exporter: %d containers, want 1", len(spec.Template.Spec.Containers))
	}
	c := spec.Template.Spec.Containers[0]
	args := append(append([]string{}, c.Command...), c.Args...)
	if len(args) < 2 || args[0] != "coord" || args[1] != "exporter" {
		t.Fatalf("Deployment coord-exporter runs %q, want coord exporter", args)
	}
	flags := map[string]string{}
	for i := 2; i < len(args); i++ {
		name, ok := strings.CutPrefix(args[i], "--")
		if !ok {
			t.Fatalf("coord exporter takes no arguments, got %q", args[i])
		}
		if name == "insecure-listen" {
			flags[name] = "true"
			continue
		}
		if i+1 >= len(args) {
			t.Fatalf("--%s without a value", name)
		}
		flags[name] = args[i+1]
		i++
	}
	host, port, err := net.SplitHostPort(flags["listen"])
	if err != nil {
		t.Fatalf("--listen %q: want host:port", flags["listen"])
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsLoopback() {
		t.Errorf("--listen %q: want the pod's addresses (0.0.0.0): a loopback address is out of the Service's reach", flags["listen"])
	} else if flags["insecure-listen"] == "" && (flags["cert-file"] == "" || flags["key-file"] == "") {
		t.Errorf("--listen %q is not loopback: coord exporter refuses it without --insecure-listen or --cert-file and --key-file", flags["listen"])
	}
	if n, err := strconv.Atoi(flags["max-names"]); flags["max-names"] != "" && (err != nil || n < 1 || n > 10000) {
		t.Errorf("--max-names %q: want 1 to 10000", flags["max-names"])
	}
	var portName string
	for _, p := range c.Ports {
		if strconv.Itoa(p.ContainerPort) == port {
			portName = p.Name
		}
	}
	if portName == "" {
		t.Fatalf("container port %s (--listen) is not declared", port)
	}
	for what, p := range map[string]*probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" || (fmt.Sprint(p.HTTPGet.Port) != portName && fmt.Sprint(p.HTTPGet.Port) != port) {
			t.Errorf("%s probe: want httpGet /healthz on port %s", what, portName)
		}
	}
	cm := find(objs, "ConfigMap", "coord-client")
	if !slices.ContainsFunc(c.EnvFrom, func(e struct {
		ConfigMapRef *struct{ Name string } `yaml:"configMapRef"`
	}) bool {
		return e.ConfigMapRef != nil && e.ConfigMapRef.Name == "coord-client"
	}) || cm == nil {
		t.Fatal("the exporter does not take envFrom ConfigMap coord-client")
	}
	for _, k := range []string{"COORD_ETCD_CACERT", "COORD_ETCD_CERT", "COORD_ETCD_KEY"} {
		secretFile(t, objs, spec.Template, c, k, cm.Data[k])
	}

	svc := find(objs, "Service", "coord-exporter")
	if svc == nil {
		t.Fatal("no Service coord-exporter in k8s/")
	}
	var ss struct {
		Selector map[string]string
		Ports    []struct {
			Port       int
			TargetPort any `yaml:"targetPort"`
		}
	}
	decodeSpec(t, svc, &ss)
	if !selects(ss.Selector, spec.Template.Metadata.Labels) {
		t.Errorf("Service coord-exporter: selector %v does not select the exporter's pods", ss.Selector)
	}
	if len(ss.Ports) != 1 || (fmt.Sprint(ss.Ports[0].TargetPort) != portName && fmt.Sprint(ss.Ports[0].TargetPort) != port) {
		t.Errorf("Service coord-exporter: ports %+v, want one to the container's %s", ss.Ports, portName)
	}
	if svc.Metadata.Annotations["prometheus.io/scrape"] != "true" || svc.Metadata.Annotations["prometheus.io/port"] != strconv.Itoa(ss.Ports[0].Port) {
		t.Errorf("Service coord-exporter: annotations %v, want prometheus.io/scrape true on its port", svc.Metadata.Annotations)
	}
}

// TestPrometheusScrape: the scrape configuration parses, has a job for
// the exporter's default address and one that keeps the k8s Service.
func TestPrometheusScrape(t *testing.T) {
	var cfg struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string
			} `yaml:"static_configs"`
			KubernetesSDConfigs []struct {
				Role       string
				Namespaces struct{ Names []string }
			} `yaml:"kubernetes_sd_configs"`
			RelabelConfigs []struct {
				SourceLabels []string `yaml:"source_labels"`
				Regex        string
				Action       string
			} `yaml:"relabel_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yamlDocs(t, filepath.Join("prometheus", "prometheus.yml"))[0].Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	static, k8s := false, false
	for _, sc := range cfg.ScrapeConfigs {
		for _, s := range sc.StaticConfigs {
			static = static || slices.Contains(s.Targets, "127.0.0.1:9479")
		}
		for _, sd := range sc.KubernetesSDConfigs {
			keeps := slices.ContainsFunc(sc.RelabelConfigs, func(r struct {
				SourceLabels []string `yaml:"source_labels"`
				Regex        string
				Action       string
			}) bool {
				return r.Action == "keep" && r.Regex == "coord-exporter"
			})
			k8s = k8s || (sd.Role == "endpoints" && slices.Contains(sd.Namespaces.Names, kustomization(t).Namespace) && keeps)
		}
	}
	if !static {
		t.Error("no job scrapes the exporter's default address 127.0.0.1:9479")
	}
	if !k8s {
		t.Error("no kubernetes_sd job keeps the coord-exporter Service in the manifests' namespace")
	}
}
