/* Generic host for a compiled odc module, used to run modules built for other architectures
 * under qemu-user. Build with -DODC_PREFIX=<prefix> -include <prefix>.h and link the object.
 *
 *   odc_harness [-w WEIGHTS] IN_0.bin ... IN_n.bin OUT_0.bin ... OUT_m.bin
 *
 * Inputs and outputs are raw little-endian tensor bytes in declaration order. Prints the status
 * and exits non-zero on any error. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ODC_CAT2(a, b) a##b
#define ODC_CAT(a, b) ODC_CAT2(a, b)
#define MODULE_RUN ODC_CAT(ODC_PREFIX, _run)
#define MODULE_DESCRIBE ODC_CAT(ODC_PREFIX, _describe)

static uint64_t tensor_bytes(const odc_tensor_desc *d) {
    uint64_t n = 1;
    for (uint32_t i = 0; i < d->rank; i++) n *= (uint64_t)d->shape[i];
    unsigned bits = 0;
    switch (d->dtype) {
    case 1: case 6: case 12: bits = 32; break;
    case 2: case 3: case 9: case 17: case 18: case 19: case 20: case 24: bits = 8; break;
    case 4: case 5: case 10: case 16: bits = 16; break;
    case 7: case 11: case 13: bits = 64; break;
    case 21: case 22: case 23: bits = 4; break;
    case 25: case 26: bits = 2; break;
    }
    return (n * bits + 7) / 8;
}

static void *read_file(const char *path, uint64_t want) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "cannot open %s\n", path); exit(2); }
    void *buf = malloc(want ? want : 1);
    size_t got = fread(buf, 1, want, f);
    if (got != want || fgetc(f) != EOF) { fprintf(stderr, "%s: expected exactly %llu bytes\n", path, (unsigned long long)want); exit(2); }
    fclose(f);
    return buf;
}

int main(int argc, char **argv) {
    const odc_module_desc *desc = MODULE_DESCRIBE();
    if (desc->magic != ODC_MODULE_MAGIC || desc->abi_version != ODC_ABI_VERSION) {
        fprintf(stderr, "bad module descriptor\n");
        return 2;
    }
    int a = 1;
    void *weights = NULL;
    if (a + 1 < argc && strcmp(argv[a], "-w") == 0) {
        weights = read_file(argv[a + 1], desc->weights_size);
        a += 2;
    }
    uint32_t ni = desc->num_inputs, no = desc->num_outputs;
    if ((uint32_t)(argc - a) != ni + no) {
        fprintf(stderr, "usage: %s [-w WEIGHTS] %u input files then %u output files\n", argv[0], ni, no);
        return 2;
    }
    odc_tensor *ins = calloc(ni + 1, sizeof(odc_tensor)), *outs = calloc(no + 1, sizeof(odc_tensor));
    for (uint32_t i = 0; i < ni; i++) {
        const odc_tensor_desc *d = &desc->inputs[i];
        uint64_t n = tensor_bytes(d);
        ins[i] = (odc_tensor){read_file(argv[a + i], n), d->shape, n, d->rank, d->dtype};
    }
    for (uint32_t i = 0; i < no; i++) {
        const odc_tensor_desc *d = &desc->outputs[i];
        uint64_t n = tensor_bytes(d);
        outs[i] = (odc_tensor){calloc(n ? n : 1, 1), d->shape, n, d->rank, d->dtype};
    }
    void *arena = NULL;
    if (desc->arena_size && posix_memalign(&arena, ODC_ARENA_ALIGN, desc->arena_size) != 0) return 2;
    odc_context ctx = {ODC_ABI_VERSION, 1, weights, NULL, NULL};
    int32_t st = MODULE_RUN(&ctx, ins, ni, outs, no, arena, desc->arena_size);
    printf("status %d\n", st);
    if (st != 0) return 1;
    for (uint32_t i = 0; i < no; i++) {
        FILE *f = fopen(argv[a + ni + i], "wb");
        if (!f || fwrite(outs[i].data, 1, outs[i].size_bytes, f) != outs[i].size_bytes) return 2;
        fclose(f);
    }
    return 0;
}
