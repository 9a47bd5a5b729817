// One implementation of the kernels, included three times by kernels.c with CK_TARGET / CK_NAME set
// (AVX-512, AVX2+FMA and portable) and VF/VI/VW naming the float vector, int vector and lane count. Vectors are clang/GCC vector extensions of VW floats; with FMA
// available the compiler contracts a·b + c in one expression into an FMA (-ffp-contract=on).

#define CK_INLINE CK_TARGET static inline __attribute__((always_inline))
#define splat CK_NAME(splat)
#define ld CK_NAME(ld)
#define st CK_NAME(st)
#define vsel CK_NAME(vsel)
#define vmax CK_NAME(vmax)
#define vmin CK_NAME(vmin)
#define hsum CK_NAME(hsum)
#define hmax CK_NAME(hmax)
#define vexp_upto88 CK_NAME(vexp_upto88)
#define erf_rational CK_NAME(erf_rational)
#define gelu_derivative_rational CK_NAME(gelu_derivative_rational)

CK_INLINE VF splat(float a) { return (VF){} + a; }
CK_INLINE VF ld(const float *p) { VF v; memcpy(&v, p, sizeof v); return v; }
CK_INLINE void st(float *p, VF v) { memcpy(p, &v, sizeof v); }
CK_INLINE VF vsel(VI m, VF a, VF b) { return (VF)(((VI)a & m) | ((VI)b & ~m)); }
/// max/min as compare-and-select: one `vmaxps`/`vminps` (x86 semantics: the second operand when
/// either is NaN, so clamps are written `vmax(bound, x)` and let a NaN x through).
/// `__builtin_elementwise_max` would add a NaN fix-up (compare + blend) per call.
CK_INLINE VF vmax(VF a, VF b) { return vsel(a > b, a, b); }
CK_INLINE VF vmin(VF a, VF b) { return vsel(a < b, a, b); }
/// Lanes summed in a fixed order (pairwise: lane i with lane i + W/2, then halves again).
CK_INLINE float hsum(VF v) {
#if VW == 16
    return (((v[0] + v[8]) + (v[4] + v[12])) + ((v[2] + v[10]) + (v[6] + v[14])))
         + (((v[1] + v[9]) + (v[5] + v[13])) + ((v[3] + v[11]) + (v[7] + v[15])));
#elif VW == 8
    return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
#else
    return (v[0] + v[2]) + (v[1] + v[3]);
#endif
}
/// Largest lane, by halving the vector (a tree: log2(W) dependent steps, not W).
CK_INLINE float hmax(VF v) {
#if VW == 16
    v8f a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7), b = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    a = (v8f)(((v8i)a & (a > b)) | ((v8i)b & ~(a > b)));
#elif VW == 8
    v8f a = v;
#endif
#if VW >= 8
    v4f c = __builtin_shufflevector(a, a, 0, 1, 2, 3), d = __builtin_shufflevector(a, a, 4, 5, 6, 7);
    c = (v4f)(((v4i)c & (c > d)) | ((v4i)d & ~(c > d)));
#else
    v4f c = v;
#endif
    float m0 = c[0] > c[2] ? c[0] : c[2], m1 = c[1] > c[3] ? c[1] : c[3];
    return m0 > m1 ? m0 : m1;
}

/// eˣ for x ≤ 88: x = n·ln2 + r with |r| ≤ ln2/2 (ln2 split high/low), a degree-6 Taylor
/// polynomial for eʳ (relative error < 2e-7 there) and 2ⁿ built in the exponent bits; x is
/// clamped below at −87.3 (eˣ then is the smallest normal-range value, not garbage).
CK_INLINE VF vexp_upto88(VF x0) {
    VF x = vmax(splat(-87.3f), x0);
    const VF shifter = splat(12582912.0f);  // 1.5·2²³: adding it rounds to the nearest integer
    VF t = x * splat(1.442695040888963f) + shifter;
    VF n = t - shifter;
    VF r = (x - n * splat(0.693359375f)) - n * splat(-2.12194440e-4f);
    VF p = splat(1.0f / 720);
    p = p * r + splat(1.0f / 120);
    p = p * r + splat(1.0f / 24);
    p = p * r + splat(1.0f / 6);
    p = p * r + splat(0.5f);
    p = p * r + splat(1.0f);
    p = p * r + splat(1.0f);
    VI ni = (VI)t - (VI)shifter;
    VI bits = (ni + 127) << 23;
    return p * (VF)bits;
}

/// erf(z) ≈ z·P(z²)/Q(z²) for |z| ≤ 4 (z clamped; erf(±4) = ±(1 − 1.5e−8) rounds to ±1 in
/// float32). A rational least-squares/minimax fit made for this project by
/// `scripts/fit-gelu-rational` (degrees 6/4): max |error| 5.4e−8 in exact arithmetic, 3.6e−7 as
/// evaluated here in float32 — the accuracy of the A&S 7.1.26 formula it replaces, at half the
/// operations (no exp). Q has positive coefficients, so no poles.
CK_INLINE VF erf_rational(VF z0) {
    VF z = vmin(splat(4.0f), vmax(splat(-4.0f), z0));
    VF t = z * z;
    VF p = splat(1.921714698e-08f);
    p = p * t + splat(-1.990293867e-06f);
    p = p * t + splat(1.555315976e-04f);
    p = p * t + splat(4.292845260e-03f);
    p = p * t + splat(5.243279785e-02f);
    p = p * t + splat(2.139398754e-01f);
    p = p * t + splat(1.128378630e+00f);
    VF q = splat(1.097987406e-03f);
    q = q * t + splat(1.555066556e-02f);
    q = q * t + splat(1.207975969e-01f);
    q = q * t + splat(5.229269266e-01f);
    q = q * t + splat(1.0f);
    return z * p / q;
}

/// GELU'(x) = Φ(x) + x·φ(x) = ½ + x·P(x²)/Q(x²) for |x| ≤ 6 (x clamped; the tails are 0 and 1
/// to float32 precision): Φ − ½ and x·φ are odd, so their sum is x times a function of x². Fit
/// by `scripts/fit-gelu-rational` (degrees 6/5): max |error| 1.2e−7 exact, 2.9e−7 in float32.
CK_INLINE VF gelu_derivative_rational(VF x0) {
    VF x = vmin(splat(6.0f), vmax(splat(-6.0f), x0));
    VF t = x * x;
    VF p = splat(-3.393802947e-11f);
    p = p * t + splat(2.021649266e-07f);
    p = p * t + splat(3.629750063e-05f);
    p = p * t + splat(2.186698657e-05f);
    p = p * t + splat(1.424005534e-02f);
    p = p * t + splat(-3.077181615e-02f);
    p = p * t + splat(7.978854179e-01f);
    VF q = splat(9.138349924e-06f);
    q = q * t + splat(1.933339518e-04f);
    q = q * t + splat(3.541508922e-03f);
    q = q * t + splat(4.108488932e-02f);
    q = q * t + splat(2.947754264e-01f);
    q = q * t + splat(1.0f);
    return splat(0.5f) + x * p / q;
}

CK_TARGET static void CK_NAME(gelu_forward)(float *out, const float *inp, long lo, long hi) {
    const VF s = splat(0.70710678118654752440f), half = splat(0.5f), one = splat(1.0f);
    long i = lo;
    for (; i + VW <= hi; i += VW) {
        VF x = ld(inp + i);
        st(out + i, half * x * (one + erf_rational(x * s)));
    }
    for (; i < hi; i++) { float x = inp[i]; out[i] = 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f)); }
}

CK_TARGET static void CK_NAME(gelu_backward)(float *dinp, const float *dout, const float *inp, long lo, long hi) {
    long i = lo;
    for (; i + VW <= hi; i += VW) {
        VF x = ld(inp + i);
        st(dinp + i, ld(dinp + i) + ld(dout + i) * gelu_derivative_rational(x));
    }
    for (; i < hi; i++) {
        float x = inp[i];
        dinp[i] += dout[i] * (0.5f * (1.0f + erff(x * 0.70710678118654752440f)) + x * 0.39894228040143267794f * expf(-0.5f * x * x));
    }
}

CK_TARGET static void CK_NAME(layernorm_forward)(float *out, float *mean, float *rstd, const float *inp,
                                                 const float *w, const float *b, long lo, long hi, long cols, float eps) {
    const long cW = cols & ~(long)(VW - 1);
    for (long r = lo; r < hi; r++) {
        const float *x = inp + r * cols;
        float *y = out + r * cols;
        VF acc = splat(0);
        long c = 0;
        for (; c < cW; c += VW) acc += ld(x + c);
        float m = hsum(acc);
        for (; c < cols; c++) m += x[c];
        m /= (float)cols;
        const VF mv = splat(m);
        acc = splat(0);
        for (c = 0; c < cW; c += VW) { VF d = ld(x + c) - mv; acc += d * d; }
        float v = hsum(acc);
        for (; c < cols; c++) { float d = x[c] - m; v += d * d; }
        float rs = 1.0f / sqrtf(v / (float)cols + eps);
        const VF rv = splat(rs);
        for (c = 0; c < cW; c += VW) st(y + c, (ld(x + c) - mv) * rv * ld(w + c) + ld(b + c));
        for (; c < cols; c++) y[c] = (x[c] - m) * rs * w[c] + b[c];
        mean[r] = m;
        rstd[r] = rs;
    }
}

CK_TARGET static void CK_NAME(layernorm_backward)(float *dinp, float *dw, float *db, const float *dout,
                                                  const float *inp, const float *w, const float *mean,
                                                  const float *rstd, long lo, long hi, long cols) {
    const long cW = cols & ~(long)(VW - 1);
    if (dw) for (long c = 0; c < cols; c++) dw[c] = 0;
    if (db) for (long c = 0; c < cols; c++) db[c] = 0;
    for (long r = lo; r < hi; r++) {
        const float *x = inp + r * cols, *dy = dout + r * cols;
        const float m = mean[r], rs = rstd[r];
        const VF mv = splat(m), rv = splat(rs);
        long c;
        if (dinp) {
            float *dx = dinp + r * cols;
            // First pass: the row sums Σg, Σg·x̂ and this row's dw/db terms (x̂ is at hand here, so
            // the second pass only writes dx: 8% faster from memory than adding dw/db there).
            VF ag = splat(0), agx = splat(0);
            for (c = 0; c < cW; c += VW) {
                VF d = ld(dy + c), xh = (ld(x + c) - mv) * rv;
                VF g = d * ld(w + c);
                ag += g;
                agx += g * xh;
                if (dw) st(dw + c, ld(dw + c) + d * xh);
                if (db) st(db + c, ld(db + c) + d);
            }
            float sg = hsum(ag), sgx = hsum(agx);
            for (; c < cols; c++) {
                float xh = (x[c] - m) * rs, g = dy[c] * w[c];
                sg += g; sgx += g * xh;
                if (dw) dw[c] += dy[c] * xh;
                if (db) db[c] += dy[c];
            }
            sg /= (float)cols;
            sgx /= (float)cols;
            const VF sgv = splat(sg), sgxv = splat(sgx);
            for (c = 0; c < cW; c += VW) {
                VF g = ld(dy + c);
                VF xh = (ld(x + c) - mv) * rv;
                st(dx + c, ld(dx + c) + rv * (g * ld(w + c) - sgv - xh * sgxv));
            }
            for (; c < cols; c++) {
                float xh = (x[c] - m) * rs;
                dx[c] += rs * (dy[c] * w[c] - sg - xh * sgx);
            }
        } else {
            for (c = 0; c < cW; c += VW) {
                VF g = ld(dy + c);
                if (dw) st(dw + c, ld(dw + c) + g * ((ld(x + c) - mv) * rv));
                if (db) st(db + c, ld(db + c) + g);
            }
            for (; c < cols; c++) {
                if (dw) dw[c] += dy[c] * ((x[c] - m) * rs);
                if (db) db[c] += dy[c];
            }
        }
    }
}

/// Row softmax of rows [lo, hi); out may alias inp. The row maximum uses four independent
/// accumulators (max is exact, so the order does not matter); the last partial vector is padded
/// with −∞ and goes through the same vector exp as the rest of the row.
CK_TARGET static void CK_NAME(softmax_forward)(float *out, const float *inp, long lo, long hi, long cols) {
    const long cW = cols & ~(long)(VW - 1), tail = cols - cW;
    for (long r = lo; r < hi; r++) {
        const float *x = inp + r * cols;
        float *y = out + r * cols;
        float pad[VW];
        for (long c = 0; c < VW; c++) pad[c] = c < tail ? x[cW + c] : -INFINITY;
        const VF xt = ld(pad);
        VF m0 = xt, m1 = splat(-INFINITY), m2 = m1, m3 = m1;
        long c = 0;
        for (; c + 4 * VW <= cW; c += 4 * VW) {
            m0 = vmax(m0, ld(x + c));
            m1 = vmax(m1, ld(x + c + VW));
            m2 = vmax(m2, ld(x + c + 2 * VW));
            m3 = vmax(m3, ld(x + c + 3 * VW));
        }
        for (; c < cW; c += VW) m0 = vmax(m0, ld(x + c));
        float mx = hmax(vmax(vmax(m0, m1), vmax(m2, m3)));
        if (mx == -INFINITY) mx = 0;
        const VF mv = splat(mx);
        VF acc = splat(0);
        for (c = 0; c < cW; c += VW) { VF e = vexp_upto88(ld(x + c) - mv); st(y + c, e); acc += e; }
        VF et = vexp_upto88(xt - mv);
        if (tail) {
            for (long k = tail; k < VW; k++) et[k] = 0;  // exp(−∞) → 0, not the clamp's 1e−38
            acc += et;
        }
        const float inv = 1.0f / hsum(acc);
        const VF iv = splat(inv);
        for (c = 0; c < cW; c += VW) st(y + c, ld(y + c) * iv);
        for (long k = 0; k < tail; k++) y[cW + k] = et[k] * inv;
    }
}

CK_TARGET static void CK_NAME(softmax_backward)(float *dinp, const float *dout, const float *out, long lo, long hi, long cols) {
    const long cW = cols & ~(long)(VW - 1);
    for (long r = lo; r < hi; r++) {
        const float *y = out + r * cols, *dy = dout + r * cols;
        float *dx = dinp + r * cols;
        VF acc = splat(0);
        long c = 0;
        for (; c < cW; c += VW) acc += ld(dy + c) * ld(y + c);
        float d = hsum(acc);
        for (; c < cols; c++) d += dy[c] * y[c];
        const VF dv = splat(d);
        for (c = 0; c < cW; c += VW) st(dx + c, ld(dx + c) + ld(y + c) * (ld(dy + c) - dv));
        for (; c < cols; c++) dx[c] += y[c] * (dy[c] - d);
    }
}

#undef CK_INLINE
#undef splat
#undef ld
#undef st
#undef vsel
#undef vmax
#undef vmin
#undef hsum
#undef hmax
#undef vexp_upto88
#undef erf_rational
#undef gelu_derivative_rational
