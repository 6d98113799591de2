/* Greedy text generation over a compiled odc decoder module, in C, through its generated header
 * only: prefill the prompt (in chunks of the prefill step's width, the last one padded), then
 * decode one token at a time, taking the most likely token (the lowest id among equals).
 * Build with -DODC_PREFIX=<prefix> -DODC_PREFIX_UPPER=<PREFIX> -include <prefix>.h and link the
 * object; runs under qemu-user for other architectures.
 *
 *   odc_decoder N_NEW ID_0 ID_1 ...
 *
 * Prints the new ids on one line, space separated, or "status S" and exits non-zero on error. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define SYM(s) CAT(ODC_PREFIX, s)
#define DEF(s) CAT(ODC_PREFIX_UPPER, s)

#define PREFILL_WIDTH DEF(_PREFILL_INPUT_INPUT_IDS_ELEMENTS)
#define VOCAB DEF(_DECODE_OUTPUT_LOGITS_ELEMENTS)

static void *aligned(uint64_t size) {
    void *p = NULL;
    if (posix_memalign(&p, ODC_ARENA_ALIGN, size ? size : ODC_ARENA_ALIGN) != 0) { fprintf(stderr, "out of memory\n"); exit(2); }
    memset(p, 0, size);  /* the state must start zeroed */
    return p;
}

static int64_t argmax(const float *v) {
    int64_t best = 0;
    for (int64_t i = 1; i < VOCAB; i++) if (v[i] > v[best]) best = i;
    return best;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s N_NEW ID...\n", argv[0]); return 2; }
    int n_new = atoi(argv[1]);
    int n_prompt = argc - 2;
    void *arena = aligned(SYM(_arena_size)());
    void *state = aligned(SYM(_state_size)());
    float logits[VOCAB];
    int64_t position = 0;
    int64_t shape_logits[2] = {1, VOCAB};
    int64_t shape_one[1] = {1};
    odc_tensor out = {logits, shape_logits, sizeof logits, 2, ODC_DTYPE_F32};
    for (int at = 0; at < n_prompt; at += PREFILL_WIDTH) {
        int64_t ids[PREFILL_WIDTH] = {0};
        int64_t n = n_prompt - at < PREFILL_WIDTH ? n_prompt - at : PREFILL_WIDTH;
        for (int i = 0; i < n; i++) ids[i] = atoll(argv[2 + at + i]);
        int64_t shape_ids[2] = {1, PREFILL_WIDTH};
        odc_tensor in[3] = {
            {ids, shape_ids, sizeof ids, 2, ODC_DTYPE_I64},
            {&position, shape_one, 8, 1, ODC_DTYPE_I64},
            {&n, shape_one, 8, 1, ODC_DTYPE_I64},
        };
        int32_t st = SYM(_prefill)(NULL, in, DEF(_PREFILL_NUM_INPUTS), &out, 1, arena, SYM(_arena_size)(), state, SYM(_state_size)());
        if (st != 0) { printf("status %d\n", st); return 1; }
        position += n;
    }
    for (int k = 0; k < n_new; k++) {
        int64_t next = argmax(logits);
        printf(k ? " %lld" : "%lld", (long long)next);
        if (k + 1 == n_new) break;
        int64_t shape_ids[2] = {1, 1};
        odc_tensor in[2] = {{&next, shape_ids, 8, 2, ODC_DTYPE_I64}, {&position, shape_one, 8, 1, ODC_DTYPE_I64}};
        int32_t st = SYM(_decode)(NULL, in, 2, &out, 1, arena, SYM(_arena_size)(), state, SYM(_state_size)());
        if (st != 0) { printf("\nstatus %d\n", st); return 1; }
        position += 1;
    }
    printf("\n");
    return 0;
}
