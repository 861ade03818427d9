# The two commands of the README: `make demo` and `make test`. Both do all set-up (libtorch into a cache outside
# the clone, see scripts/setup-libtorch.sh) and are safe to run again.
CARGO ?= cargo
DIFFUSE := target/release/diffuse
OUT ?= out

.PHONY: demo test setup build ci bench clean-out

demo: build
	$(DIFFUSE) doctor
	@echo
	$(DIFFUSE) solvers bench --problem examples/problem.json --json $(OUT)/solvers.json --plot $(OUT)/error_vs_nfe.svg --force
	@echo
	$(DIFFUSE) audio enhance examples/audio/noisy/speech.wav -o $(OUT)/audio/speech.wav --force
	$(DIFFUSE) audio eval --clean examples/audio/clean --noisy examples/audio/noisy --enhanced $(OUT)/audio
	@echo
	@echo "Open $(OUT)/error_vs_nfe.svg for the error-vs-NFE plot; listen to examples/audio/noisy/speech.wav and $(OUT)/audio/speech.wav."

test: setup
	$(CARGO) test --workspace

setup:
	@./scripts/setup-libtorch.sh

build: setup
	$(CARGO) build --release -p diffuse-cli

ci:
	./.ci/run

bench: setup
	$(CARGO) bench -p diffuse-core
