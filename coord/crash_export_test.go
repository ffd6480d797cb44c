package coord

// WithCrashHook has the Manager call f at the named points of its
// downloads (before-staging, after-staging, after-marker, after-clear,
// after-rename, before-record, after-record), so that the crash tests can
// kill the process there. It exists only in this package's test binary.
func WithCrashHook(f func(point string)) Option {
	return func(o *options) { o.crashAt = f }
}
