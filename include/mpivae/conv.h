/*
 * conv.h: 2-D convolution and transposed convolution, as forward/backward
 * pairs with PyTorch's semantics and weight layouts (NCHW, batch first,
 * square kernels, dilation 1, groups 1).
 *
 * Conv2d(Cin, Cout, k, stride s, padding p):
 *   x[B,Cin,H,W], w[Cout,Cin,k,k], b[Cout] -> y[B,Cout,Hout,Wout],
 *   Hout = (H + 2p - k) / s + 1, Wout = (W + 2p - k) / s + 1 (floor),
 *   y[n,o,i,j] = b[o] + sum_{c,u,v} w[o,c,u,v] x[n,c, i*s - p + u, j*s - p + v]
 *   with x = 0 outside the image.
 *
 * ConvTranspose2d(Cin, Cout, k, stride s, padding p, output_padding op):
 *   x[B,Cin,H,W], w[Cin,Cout,k,k] (PyTorch's transposed layout), b[Cout]
 *   -> y[B,Cout,Hout,Wout], Hout = (H-1) s - 2p + k + op (Wout alike),
 *   y[n,o, i*s - p + u, j*s - p + v] += w[c,o,u,v] x[n,c,i,j] over c,i,j,u,v
 *   (targets outside the output are dropped), plus b[o] everywhere. It is
 *   the gradient of a Conv2d(Cout -> Cin) with the same w, k, s, p taken
 *   with respect to that conv's input of size Hout x Wout.
 *
 * Lowering: im2col / col2im around cblas_sgemm, per sample when the image
 * that im2col reads has fewer than 8 channels, else in chunks of samples
 * with the channels last; a Conv2d with a 3x3 kernel, stride 1, padding 1
 * and 8 or more channels on both sides by Winograd's F(2x2, 3x3) instead,
 * 16 sgemms per chunk of tiles in the transform domain, for the forward
 * pass and both gradients, and with fewer than 8 output channels tap by tap
 * (one product for all 9 taps, then each output adds its neighbours')
 * (docs/performance-notes.md has the measurements that chose them). Every function takes a caller-owned scratch buffer of at
 * least the _scratch function's count of floats; its
 * contents are not kept between calls, so one buffer, sized for the largest
 * layer, can serve every layer of a model. Nothing is allocated inside.
 * Buffers must not overlap each other or the scratch.
 *
 * As in ops.h: ReLU is applied outside (vae_relu_backward), forward adds
 * the bias, backward ADDS (+=) into dw and db and overwrites dx.
 */
#ifndef MPIVAE_CONV_H
#define MPIVAE_CONV_H

#include <stddef.h>

/*
 * Flags, the layout argument of the ops (OR-ed; 0 is NCHW for both and no
 * activation). Tensor layouts: VAE_CONV_X_NHWC keeps x and dx channels
 * last, x[B,H,W,Cin]; VAE_CONV_Y_NHWC keeps y and dy channels last,
 * y[B,Hout,Wout,Cout]. The weights keep PyTorch's layouts either way. A
 * model can store the activation between two conv layers channels last and
 * skip a transpose on each side (see vae_conv_channels_last).
 * ReLU, applied where the op writes (while the data are in cache) instead
 * of in a pass of its own over the whole tensor: VAE_CONV_RELU (forward)
 * makes y = max(0, conv + b); VAE_CONV_DX_RELU (backward) says that x is
 * the output of a ReLU, and multiplies dx by its derivative, dx = 0 where
 * x <= 0 (vae_relu_backward of ops.h, applied for the layer before).
 */
enum { VAE_CONV_X_NHWC = 1, VAE_CONV_Y_NHWC = 2, VAE_CONV_RELU = 4, VAE_CONV_DX_RELU = 8 };

/*
 * Whether an activation of C channels between two conv layers is best kept
 * channels last: 1 when the lowering of the layer that im2col's it is the
 * patch-major one (C >= 8), which then reads and writes it in place (as do
 * the Winograd and tap-wise paths of the 3x3 stride-1 convolutions).
 */
int vae_conv_channels_last(int C);

/*
 * Floats of scratch needed by vae_conv2d_forward and vae_conv2d_backward
 * for this geometry and batches of up to B. With Cin < 8: Cin*k*k *
 * Hout*Wout (one sample's column matrix) plus s*s * ceil((H + 2p) / s) *
 * ceil((W + 2p) / s) (one channel of the padded image, split into its
 * stride phases) plus Cin*H*W (one sample of x in NCHW). With Cin >= 8
 * (other than the two 3x3 stride-1 cases below), for a chunk of nb = min(B, ceil(588 / (Hout*Wout))) samples:
 * nb*Hout*Wout * Cin*k*k (the chunk's column matrix) + nb*H*W*Cin +
 * nb*Hout*Wout*Cout (x and y, channels last) + 2 * Cout*Cin*k*k (the
 * weights and their gradient in tap order). Winograd (k = 3, s = 1, p =
 * 1, Cin and Cout >= 8), for a chunk of nb = min(B, max(1, 512 / T))
 * samples of T = ceil(H/2) * ceil(W/2) tiles each: nb*H*W * (Cin + Cout)
 * (x and y channels last) + 16 * (nb*T*Cin + 16) + 16 * (nb*T*Cout + 16)
 * (the tiles in the transform domain) + 2 * 16*Cout*Cin (the weights and
 * their gradient there) + max(Cin, Cout) (a row of zeros) + 4 * (2 *
 * ceil(W/2) + 2) * Cin (a band of tiles' columns in the input transforms)
 * + 4 * Cout (a tile's discard rows, or its output gradient partly
 * transformed). Tap by tap (k = 3, s = 1,
 * p = 1, Cin >= 8, Cout < 8), for a chunk of nb = min(B, ceil(2048 /
 * (H*W))) samples of px = nb*H*W pixels: px * (Cin + Cout) (x and y
 * channels last) + px * 9*Cout (the taps' products) + 2 * 9*Cout*Cin (the
 * weights in tap order and their gradient). Returns 0
 * when the geometry is invalid: a size, k or s below 1, B or p below 0, or
 * Hout or Wout below 1 (k > H + 2p).
 */
size_t vae_conv2d_scratch(int B, int Cin, int H, int W, int Cout, int k, int s, int p);

/*
 * y[B,Cout,Hout,Wout] = conv2d(x[B,Cin,H,W], w[Cout,Cin,k,k]) + b[Cout].
 * Per sample: col[Cin*k*k, Hout*Wout] = im2col(x_n), y_n = w col + b (the
 * patch-major lowering computes the same with col transposed, a chunk of
 * samples at a time).
 */
void vae_conv2d_forward(const float *x, const float *w, const float *b, float *y, int B, int Cin,
                        int H, int W, int Cout, int k, int s, int p, int layout, float *scratch);

/*
 * Given dy[B,Cout,Hout,Wout] (already multiplied by the activation's
 * derivative): per sample, with col = im2col(x_n) [Cin*k*k, Hout*Wout],
 * dw[Cout, Cin*k*k] += dy_n col^T, db[o] += sum_{i,j} dy_n[o,i,j], and when
 * dx is not NULL dx_n[Cin,H,W] = col2im(w^T dy_n) (overwritten). With dw
 * and db both NULL, the input gradient only: no weight gradient is computed.
 */
void vae_conv2d_backward(const float *x, const float *w, const float *dy, float *dx, float *dw,
                         float *db, int B, int Cin, int H, int W, int Cout, int k, int s, int p,
                         int layout, float *scratch);

/*
 * Floats of scratch needed by vae_convt2d_forward and vae_convt2d_backward
 * for batches of up to B. With Cout < 8: Cout*k*k * H*W (one sample's
 * column matrix) plus s*s * ceil((Hout + 2p) / s) * ceil((Wout + 2p) / s)
 * (one channel of the padded output, split into its stride phases) plus
 * Cout*Hout*Wout (one sample of y in NCHW). With Cout >= 8, for a chunk
 * of nb = min(B, ceil(588 / (H*W))) samples: nb*H*W * Cout*k*k +
 * nb*Hout*Wout*Cout + nb*H*W*Cin + 2 * Cin*Cout*k*k (the conv's layout
 * with the roles of x and y exchanged). Returns 0 when the geometry is
 * invalid: a size, k or s below 1, B, p or op below 0, op >= s (PyTorch
 * requires output_padding < stride at dilation 1), or Hout or Wout below 1.
 */
size_t vae_convt2d_scratch(int B, int Cin, int H, int W, int Cout, int k, int s, int p, int op);

/*
 * y[B,Cout,Hout,Wout] = conv_transpose2d(x[B,Cin,H,W], w[Cin,Cout,k,k]) +
 * b[Cout]. Per sample: col[Cout*k*k, H*W] = w^T x_n, then
 * y_n = b + col2im(col), the conv's input-gradient computation.
 */
void vae_convt2d_forward(const float *x, const float *w, const float *b, float *y, int B, int Cin,
                         int H, int W, int Cout, int k, int s, int p, int op, int layout,
                         float *scratch);

/*
 * Given dy[B,Cout,Hout,Wout]: per sample, with col = im2col(dy_n)
 * [Cout*k*k, H*W] (the conv's forward lowering applied to dy),
 * dw[Cin, Cout*k*k] += x_n col^T, db[o] += sum_{i,j} dy_n[o,i,j], and when
 * dx is not NULL dx_n[Cin, H*W] = w col (overwritten).
 */
void vae_convt2d_backward(const float *x, const float *w, const float *dy, float *dx, float *dw,
                          float *db, int B, int Cin, int H, int W, int Cout, int k, int s, int p,
                          int op, int layout, float *scratch);

#endif
