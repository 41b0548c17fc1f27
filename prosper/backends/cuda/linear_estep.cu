// ProSper: per-state part of the truncated E-step of linear Gaussian models (BSC, TSC, DSC).
//
// Compiled at run time by CuPy (NVRTC) from prosper/backends/cupy_backend.py; compile-checked
// with nvcc by tests/gpu/test_cupy.py. Self-contained (no headers), as NVRTC compiles it.
//
// One thread block per data point n. Candidate states are ordered
// [zero, singletons value-major (v, h) -> 1 + v*H + h, table rows r -> 1 + V1*H + r].
// The squared error ||y - W s||^2 of a table state comes in precomputed (a GEMM):
// err[n, r] = s^T W^T W s - 2 s^T W^T y; the zero state and singletons are computed here.
// Outputs: log_marginal[n] = log sum_k exp(ll_k + lp_k) (temperature 1) and, when
// accumulate != 0, q[n, k] = mask[n] * posterior weight of state k at inverse temperatures
// (beta, prior_beta); without accumulate q[n, :] holds the log-likelihoods (scratch).

#define PROSPER_BLOCK 128  // threads per block; must be a power of two

__device__ __forceinline__ double prosper_block_max(double v, double* red) {
    red[threadIdx.x] = v;
    __syncthreads();
    for (int s = PROSPER_BLOCK / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) red[threadIdx.x] = fmax(red[threadIdx.x], red[threadIdx.x + s]);
        __syncthreads();
    }
    const double out = red[0];
    __syncthreads();  // red is reused by the next reduction
    return out;
}

__device__ __forceinline__ double prosper_block_sum(double v, double* red) {
    red[threadIdx.x] = v;
    __syncthreads();
    for (int s = PROSPER_BLOCK / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
        __syncthreads();
    }
    const double out = red[0];
    __syncthreads();
    return out;
}

extern "C" __global__ void __launch_bounds__(PROSPER_BLOCK) prosper_linear_posterior(
    const double* __restrict__ WY,    // (B, H)  W^T y
    const double* __restrict__ yy,    // (B,)    ||y||^2
    const double* __restrict__ diag,  // (H,)    diag(W^T W)
    const double* __restrict__ nz,    // (V1,)   non-zero latent values
    const double* __restrict__ err,   // (B, Kc) table states' s^T W^T W s - 2 s^T W^T y
    const double* __restrict__ lp,    // (K,)    log-prior of every state
    const double* __restrict__ mask,  // (B,)    weight of each point in the statistics
    const int B, const int H, const int V1, const int Kc,
    const double c0,                  // -D/2 log(2 pi sigma^2)
    const double inv2s2,              // 1 / (2 sigma^2)
    const double beta, const double prior_beta,
    const int accumulate,
    double* __restrict__ log_marginal,  // (B,)
    double* __restrict__ q)             // (B, K)
{
    __shared__ double red[PROSPER_BLOCK];
    const int n = blockIdx.x;
    if (n >= B) return;  // uniform over the block: no thread is left waiting at a barrier
    const int n_single = V1 * H;
    const int K = 1 + n_single + Kc;
    const bool tempered = beta != 1.0 || prior_beta != 1.0;
    const double y2 = yy[n];
    const double* wy = WY + (long long)n * H;
    const double* en = err + (long long)n * Kc;
    double* qn = q + (long long)n * K;
    // start of the maxima: below every finite log-joint, and needs no header or intrinsic
    const double lowest = -1.0e308;

    double m1 = lowest, mb = lowest;
    for (int k = threadIdx.x; k < K; k += PROSPER_BLOCK) {
        double e;
        if (k == 0) {
            e = y2;
        } else if (k <= n_single) {
            const int v = (k - 1) / H, h = (k - 1) - v * H;
            const double s = nz[v];
            e = y2 - 2.0 * s * wy[h] + s * s * diag[h];
        } else {
            e = y2 + en[k - 1 - n_single];
        }
        const double ll = c0 - e * inv2s2;
        qn[k] = ll;
        m1 = fmax(m1, ll + lp[k]);
        mb = fmax(mb, beta * ll + prior_beta * lp[k]);
    }
    m1 = prosper_block_max(m1, red);
    if (tempered) mb = prosper_block_max(mb, red);

    double s1 = 0.0, sb = 0.0;
    for (int k = threadIdx.x; k < K; k += PROSPER_BLOCK) {
        const double ll = qn[k];
        const double e1 = exp(ll + lp[k] - m1);
        s1 += e1;
        if (accumulate) {
            const double w = tempered ? exp(beta * ll + prior_beta * lp[k] - mb) : e1;
            sb += w;
            qn[k] = w;
        }
    }
    s1 = prosper_block_sum(s1, red);
    if (threadIdx.x == 0) log_marginal[n] = m1 + log(s1);
    if (!accumulate) return;
    sb = tempered ? prosper_block_sum(sb, red) : s1;
    const double scale = mask[n] / sb;
    // each thread rescales exactly the entries it wrote above: no barrier needed
    for (int k = threadIdx.x; k < K; k += PROSPER_BLOCK) qn[k] *= scale;
}
