/* A C application that links the digits model compiled ahead of time by odc:
 *
 *   odc compile examples/digits/digits.onnx --shape pixels=8x64 --emit obj,header -o build/c-app/digits.o
 *   cc -O2 -I build/c-app examples/c-app/main.c build/c-app/digits.o -o build/c-app/digits
 *   build/c-app/digits examples/digits/samples.npy
 *
 * It reads the eight sample digits from the .npy file, runs the model (no allocation inside),
 * and prints the same lines as `odc run`. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digits.h"

/* Minimal .npy reader for little-endian float32 C-order arrays. */
static float *read_npy_f32(const char *path, size_t want) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "cannot open %s\n", path); exit(2); }
    unsigned char head[10];
    if (fread(head, 1, 10, f) != 10 || memcmp(head, "\x93NUMPY", 6) != 0) { fprintf(stderr, "%s: not a .npy file\n", path); exit(2); }
    size_t hlen = head[8] | (head[9] << 8);
    char *h = malloc(hlen + 1);
    if (fread(h, 1, hlen, f) != hlen) exit(2);
    h[hlen] = 0;
    if (!strstr(h, "'<f4'") || strstr(h, "'fortran_order': True")) { fprintf(stderr, "%s: need C-order float32\n", path); exit(2); }
    float *v = malloc(want * sizeof(float));
    if (fread(v, sizeof(float), want, f) != want) { fprintf(stderr, "%s: too few values\n", path); exit(2); }
    free(h);
    fclose(f);
    return v;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s samples.npy\n", argv[0]); return 2; }
    float *pixels = read_npy_f32(argv[1], DIGITS_INPUT_PIXELS_ELEMENTS);
    int64_t digit[DIGITS_OUTPUT_DIGIT_ELEMENTS];
    float probs[DIGITS_OUTPUT_PROBABILITIES_ELEMENTS];
    odc_tensor in[1] = {{pixels, digits_input_pixels_shape, DIGITS_INPUT_PIXELS_BYTES, DIGITS_INPUT_PIXELS_RANK, DIGITS_INPUT_PIXELS_DTYPE}};
    odc_tensor out[2] = {
        {digit, digits_output_digit_shape, sizeof digit, DIGITS_OUTPUT_DIGIT_RANK, DIGITS_OUTPUT_DIGIT_DTYPE},
        {probs, digits_output_probabilities_shape, sizeof probs, DIGITS_OUTPUT_PROBABILITIES_RANK, DIGITS_OUTPUT_PROBABILITIES_DTYPE},
    };
    static _Alignas(64) unsigned char arena[DIGITS_ARENA_SIZE + 1];
    int32_t st = digits_run(NULL, in, 1, out, 2, arena, DIGITS_ARENA_SIZE);
    if (st != ODC_OK) { fprintf(stderr, "digits_run failed with status %d\n", st); return 1; }
    printf("digit: i64 [%d] = [", (int)DIGITS_OUTPUT_DIGIT_ELEMENTS);
    for (int i = 0; i < DIGITS_OUTPUT_DIGIT_ELEMENTS; i++) printf("%s%lld", i ? ", " : "", (long long)digit[i]);
    printf("]\nprobabilities: f32 [8, 10] = [");
    for (int i = 0; i < 16; i++) printf("%s%.6f", i ? ", " : "", probs[i]);
    printf(", ... (%d total)]\n", (int)DIGITS_OUTPUT_PROBABILITIES_ELEMENTS);
    free(pixels);
    return 0;
}
