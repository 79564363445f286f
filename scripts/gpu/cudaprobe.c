/* cudaprobe: the GPU acceptance run's fallback workload where no CUDA
 * PyTorch is at hand. It needs no CUDA headers or toolkit: it loads the
 * driver's libcuda.so.1 at run time and calls the driver API, declared here.
 *
 *   cudaprobe count            print how many GPUs the driver shows
 *   cudaprobe train STEPS      timed device memory work (memset + copies), JSON
 *   cudaprobe hold MiB SECONDS allocate and hold device memory
 *   cudaprobe busy SECONDS     keep the GPU's engines busy
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef unsigned long long CUdeviceptr;

static CUresult (*cuInit)(unsigned);
static CUresult (*cuDeviceGetCount)(int *);
static CUresult (*cuDeviceGet)(CUdevice *, int);
static CUresult (*cuDeviceGetName)(char *, int, CUdevice);
static CUresult (*cuCtxCreate)(CUcontext *, unsigned, CUdevice);
static CUresult (*cuMemAlloc)(CUdeviceptr *, size_t);
static CUresult (*cuMemsetD8)(CUdeviceptr, unsigned char, size_t);
static CUresult (*cuMemcpyDtoD)(CUdeviceptr, CUdeviceptr, size_t);
static CUresult (*cuCtxSynchronize)(void);

static void die(const char *what, CUresult r) {
	fprintf(stderr, "cudaprobe: %s failed (CUresult %d)\n", what, r);
	exit(1);
}

#define CHECK(call) do { CUresult r_ = (call); if (r_) die(#call, r_); } while (0)

static void *sym(void *h, const char *a, const char *b) {
	void *p = dlsym(h, a);
	if (!p && b) p = dlsym(h, b);
	if (!p) { fprintf(stderr, "cudaprobe: libcuda has no %s\n", a); exit(1); }
	return p;
}

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b) {
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv) {
	const char *mode = argc > 1 ? argv[1] : "count";
	void *h = dlopen("libcuda.so.1", RTLD_NOW);
	if (!h) { fprintf(stderr, "cudaprobe: %s\n", dlerror()); return 1; }
	cuInit = sym(h, "cuInit", NULL);
	cuDeviceGetCount = sym(h, "cuDeviceGetCount", NULL);
	cuDeviceGet = sym(h, "cuDeviceGet", NULL);
	cuDeviceGetName = sym(h, "cuDeviceGetName", NULL);
	cuCtxCreate = sym(h, "cuCtxCreate_v2", "cuCtxCreate");
	cuMemAlloc = sym(h, "cuMemAlloc_v2", "cuMemAlloc");
	cuMemsetD8 = sym(h, "cuMemsetD8_v2", "cuMemsetD8");
	cuMemcpyDtoD = sym(h, "cuMemcpyDtoD_v2", "cuMemcpyDtoD");
	cuCtxSynchronize = sym(h, "cuCtxSynchronize", NULL);

	int n = 0;
	CHECK(cuInit(0));
	CHECK(cuDeviceGetCount(&n));
	if (!strcmp(mode, "count")) { printf("{\"gpus_seen\": %d}\n", n); return 0; }
	if (n < 1) { fprintf(stderr, "cudaprobe: no GPU\n"); return 1; }
	CUdevice d; CUcontext ctx; char name[128] = {0};
	CHECK(cuDeviceGet(&d, 0));
	CHECK(cuDeviceGetName(name, sizeof name - 1, d));
	CHECK(cuCtxCreate(&ctx, 0, d));

	if (!strcmp(mode, "hold") && argc > 3) {
		size_t bytes = (size_t)atol(argv[2]) << 20;
		CUdeviceptr p;
		CHECK(cuMemAlloc(&p, bytes));
		CHECK(cuMemsetD8(p, 1, bytes));
		CHECK(cuCtxSynchronize());
		printf("{\"held_mib\": %s}\n", argv[2]);
		fflush(stdout);
		sleep(atoi(argv[3]));
		return 0;
	}
	size_t bytes = 256u << 20;
	CUdeviceptr a, b;
	CHECK(cuMemAlloc(&a, bytes));
	CHECK(cuMemAlloc(&b, bytes));
	if (!strcmp(mode, "busy") && argc > 2) {
		double end = now() + atof(argv[2]);
		while (now() < end) {
			CHECK(cuMemsetD8(a, 7, bytes));
			CHECK(cuMemcpyDtoD(b, a, bytes));
			CHECK(cuCtxSynchronize());
		}
		printf("{\"busy_s\": %s}\n", argv[2]);
		return 0;
	}
	if (!strcmp(mode, "train")) {
		int steps = argc > 2 ? atoi(argv[2]) : 60;
		if (steps < 11) steps = 11;
		double *t = calloc(steps, sizeof *t);
		for (int i = 0; i < steps; i++) {
			double t0 = now();
			for (int k = 0; k < 8; k++) {
				CHECK(cuMemsetD8(a, (unsigned char)k, bytes));
				CHECK(cuMemcpyDtoD(b, a, bytes));
			}
			CHECK(cuCtxSynchronize());
			t[i] = (now() - t0) * 1000;
		}
		qsort(t + 10, steps - 10, sizeof *t, cmp);
		printf("{\"workload\": \"cudaprobe\", \"device\": \"%s\", \"gpus_seen\": %d, \"step_ms_median\": %.3f}\n",
		       name, n, t[10 + (steps - 10) / 2]);
		return 0;
	}
	fprintf(stderr, "cudaprobe: unknown mode %s (count, train, hold, busy)\n", mode);
	return 2;
}
