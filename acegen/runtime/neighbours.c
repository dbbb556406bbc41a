/* acegen neighbour list: a cell list over atoms and their periodic images, and the scatter of
   pair gradients into forces and the virial.  Compiled once through the kernel cache and
   loaded with cffi by acegen/runtime/neighbours.py (see its docstring for the algorithm); the
   declarations there (_CDEF) must match the two functions below. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NL_API __attribute__((visibility("default")))

/* Cell list over n atoms (positions pos, wrap shifts T so that pos - T cell lies in the cell
   along periodic directions) and their periodic images with shifts S in [-nimg, nimg]^3
   (nimg[d] = 0 along open directions) that pass the fractional slab test
   -slab[d] <= f_d + S_d < 1 + slab[d] (periodic d).  Pairs (i, j, n = S - T_j + T_i) with
   |pos_j - pos_i + n cell| < rc, excluding i == j at n = 0, in centre order.
   count[i] (n entries) receives the number of pairs of centre i.  If the total is at most
   capacity, iout/jout/rij are filled and closest[0] = the smallest |r_ij|^2, closest[1] =
   its pair index (-1 without pairs).  Returns the total number of pairs, or -1 on allocation
   failure.  inv: inverse cell (rows), for fractional coordinates f = x inv. */
NL_API int64_t acegen_cell_list(int64_t n, const double *pos, const int64_t *T, const double *cell,
                                const double *inv, const int32_t *pbc, const int64_t *nimg,
                                const double *slab, double rc, int64_t capacity, int64_t *count,
                                int64_t *iout, int64_t *jout, double *rij, double *closest)
{
    closest[0] = INFINITY;
    closest[1] = -1.0;
    int64_t nshift = (2 * nimg[0] + 1) * (2 * nimg[1] + 1) * (2 * nimg[2] + 1);
    /* points: wrapped atoms and their images */
    int64_t cap_pts = n > 0 ? n * 2 + 64 : 64, npts = 0;
    double *P = (double *)malloc((size_t)cap_pts * 3 * sizeof(double));
    int64_t *src = (int64_t *)malloc((size_t)cap_pts * 4 * sizeof(int64_t)); /* atom, S0, S1, S2 */
    int64_t total = -1;
    int64_t *bin_start = NULL, *order = NULL, *pbin = NULL;
    if (P == NULL || src == NULL)
        goto done;
    for (int64_t a = 0; a < n; ++a) {
        double w[3], f[3];
        for (int c = 0; c < 3; ++c)
            w[c] = pos[3 * a + c] - (T[3 * a] * cell[c] + T[3 * a + 1] * cell[3 + c] + T[3 * a + 2] * cell[6 + c]);
        for (int d = 0; d < 3; ++d)
            f[d] = w[0] * inv[d] + w[1] * inv[3 + d] + w[2] * inv[6 + d];
        for (int64_t s = 0; s < nshift; ++s) {
            int64_t S[3];
            S[0] = s % (2 * nimg[0] + 1) - nimg[0];
            S[1] = (s / (2 * nimg[0] + 1)) % (2 * nimg[1] + 1) - nimg[1];
            S[2] = s / ((2 * nimg[0] + 1) * (2 * nimg[1] + 1)) - nimg[2];
            int keep = 1;
            for (int d = 0; d < 3 && keep; ++d)
                if (pbc[d] && S[d] != 0) {
                    const double g = f[d] + (double)S[d];
                    keep = g >= -slab[d] && g < 1.0 + slab[d];
                }
            if (!keep)
                continue;
            if (npts == cap_pts) {
                cap_pts *= 2;
                double *P2 = (double *)realloc(P, (size_t)cap_pts * 3 * sizeof(double));
                if (P2 == NULL)
                    goto done;
                P = P2;
                int64_t *s2 = (int64_t *)realloc(src, (size_t)cap_pts * 4 * sizeof(int64_t));
                if (s2 == NULL)
                    goto done;
                src = s2;
            }
            for (int c = 0; c < 3; ++c)
                P[3 * npts + c] = w[c] + S[0] * cell[c] + S[1] * cell[3 + c] + S[2] * cell[6 + c];
            src[4 * npts] = a;
            src[4 * npts + 1] = S[0];
            src[4 * npts + 2] = S[1];
            src[4 * npts + 3] = S[2];
            ++npts;
        }
    }
    /* Cartesian bins at least rc / 2 wide over the bounding box of all points */
    double lo[3] = {0.0, 0.0, 0.0}, hi[3] = {0.0, 0.0, 0.0}, width[3];
    int64_t nb[3];
    for (int c = 0; c < 3; ++c) {
        lo[c] = npts ? P[c] : 0.0;
        hi[c] = lo[c];
    }
    for (int64_t p = 0; p < npts; ++p)
        for (int c = 0; c < 3; ++c) {
            if (P[3 * p + c] < lo[c])
                lo[c] = P[3 * p + c];
            if (P[3 * p + c] > hi[c])
                hi[c] = P[3 * p + c];
        }
    for (int c = 0; c < 3; ++c) {
        const double nbc = floor(2.0 * (hi[c] - lo[c]) / rc);
        nb[c] = nbc < 1.0 ? 1 : (nbc > 1e6 ? 1000000 : (int64_t)nbc);
    }
    /* at most about 4 bins per point (sparse clusters): coarsen the finest direction */
    while (nb[0] * nb[1] * nb[2] > 4 * npts + 64) {
        int c = nb[0] >= nb[1] && nb[0] >= nb[2] ? 0 : (nb[1] >= nb[2] ? 1 : 2);
        nb[c] = (nb[c] + 1) / 2;
    }
    for (int c = 0; c < 3; ++c) {
        const double span = hi[c] - lo[c];
        width[c] = span > 0.0 ? span / (double)nb[c] : 1.0;
    }
    const int64_t nbins = nb[0] * nb[1] * nb[2];
    bin_start = (int64_t *)calloc((size_t)nbins + 1, sizeof(int64_t));
    order = (int64_t *)malloc((size_t)(npts > 0 ? npts : 1) * sizeof(int64_t));
    pbin = (int64_t *)malloc((size_t)(npts > 0 ? npts : 1) * sizeof(int64_t));
    if (bin_start == NULL || order == NULL || pbin == NULL)
        goto done;
    for (int64_t p = 0; p < npts; ++p) {
        int64_t b[3];
        for (int c = 0; c < 3; ++c) {
            b[c] = (int64_t)((P[3 * p + c] - lo[c]) / width[c]);
            if (b[c] < 0)
                b[c] = 0;
            if (b[c] >= nb[c])
                b[c] = nb[c] - 1;
        }
        pbin[p] = (b[2] * nb[1] + b[1]) * nb[0] + b[0];
        bin_start[pbin[p] + 1]++;
    }
    for (int64_t b = 0; b < nbins; ++b)
        bin_start[b + 1] += bin_start[b];
    {
        int64_t *fill = (int64_t *)calloc((size_t)nbins, sizeof(int64_t));
        if (fill == NULL)
            goto done;
        for (int64_t p = 0; p < npts; ++p)
            order[bin_start[pbin[p]] + fill[pbin[p]]++] = p;
        free(fill);
    }
    /* points and their sources in bin order (contiguous scans) */
    {
        double *Ps = (double *)malloc((size_t)(npts > 0 ? npts : 1) * 3 * sizeof(double));
        int64_t *ss = (int64_t *)malloc((size_t)(npts > 0 ? npts : 1) * 4 * sizeof(int64_t));
        if (Ps == NULL || ss == NULL) {
            free(Ps);
            free(ss);
            goto done;
        }
        for (int64_t e = 0; e < npts; ++e) {
            const int64_t p = order[e];
            for (int c = 0; c < 3; ++c)
                Ps[3 * e + c] = P[3 * p + c];
            for (int c = 0; c < 4; ++c)
                ss[4 * e + c] = src[4 * p + c];
            order[e] = pbin[p]; /* order now holds the bin of sorted point e */
        }
        free(P);
        free(src);
        P = Ps;
        src = ss;
        int64_t *tmp = pbin;
        pbin = order;
        order = tmp;
    }
    /* the unshifted copy of every atom, in atom order */
    {
        int64_t *home = (int64_t *)malloc((size_t)(n > 0 ? n : 1) * sizeof(int64_t));
        if (home == NULL)
            goto done;
        for (int64_t p = 0; p < npts; ++p)
            if (src[4 * p + 1] == 0 && src[4 * p + 2] == 0 && src[4 * p + 3] == 0)
                home[src[4 * p]] = p;
        const double rc2 = rc * rc;
        int64_t k = 0;
        for (int64_t i = 0; i < n; ++i) {
            const int64_t pi = home[i];
            const int64_t b0 = pbin[pi] % nb[0], b1 = (pbin[pi] / nb[0]) % nb[1], b2 = pbin[pi] / (nb[0] * nb[1]);
            int64_t ci = 0;
            for (int64_t z = b2 - 2; z <= b2 + 2; ++z) {
                if (z < 0 || z >= nb[2])
                    continue;
                for (int64_t y = b1 - 2; y <= b1 + 2; ++y) {
                    if (y < 0 || y >= nb[1])
                        continue;
                    for (int64_t x = b0 - 2; x <= b0 + 2; ++x) {
                        if (x < 0 || x >= nb[0])
                            continue;
                        const int64_t b = (z * nb[1] + y) * nb[0] + x;
                        for (int64_t pj = bin_start[b]; pj < bin_start[b + 1]; ++pj) {
                            if (pj == pi)
                                continue;
                            const double dx = P[3 * pj] - P[3 * pi], dy = P[3 * pj + 1] - P[3 * pi + 1],
                                         dz = P[3 * pj + 2] - P[3 * pi + 2];
                            if (dx * dx + dy * dy + dz * dz >= rc2)
                                continue;
                            const int64_t j = src[4 * pj];
                            int64_t m[3];
                            for (int d = 0; d < 3; ++d)
                                m[d] = src[4 * pj + 1 + d] - T[3 * j + d] + T[3 * i + d];
                            double v[3];
                            for (int c = 0; c < 3; ++c)
                                v[c] = (pos[3 * j + c] - pos[3 * i + c]) +
                                       (m[0] * cell[c] + m[1] * cell[3 + c] + m[2] * cell[6 + c]);
                            const double r2 = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
                            if (!(r2 < rc2))
                                continue;
                            if (k < capacity) {
                                if (r2 < closest[0]) {
                                    closest[0] = r2;
                                    closest[1] = (double)k;
                                }
                                iout[k] = i;
                                jout[k] = j;
                                rij[3 * k] = v[0];
                                rij[3 * k + 1] = v[1];
                                rij[3 * k + 2] = v[2];
                            }
                            ++k;
                            ++ci;
                        }
                    }
                }
            }
            count[i] = ci;
        }
        free(home);
        total = k;
    }
done:
    free(P);
    free(src);
    free(bin_start);
    free(order);
    free(pbin);
    return total;
}

/* F[i] += g_k, F[j] -= g_k per pair (g = dE/dr_ij, so F = -dE/dr_a); W[a][b] = sum_k g_k,a r_k,b */
NL_API void acegen_scatter(int64_t n_pairs, const int64_t *ci, const int64_t *cj, const double *g,
                           const double *rij, double *F, double *W)
{
    for (int c = 0; c < 9; ++c)
        W[c] = 0.0;
    for (int64_t k = 0; k < n_pairs; ++k) {
        const double *gk = g + 3 * k, *rk = rij + 3 * k;
        for (int a = 0; a < 3; ++a) {
            F[3 * ci[k] + a] += gk[a];
            F[3 * cj[k] + a] -= gk[a];
            for (int b = 0; b < 3; ++b)
                W[3 * a + b] += gk[a] * rk[b];
        }
    }
}
