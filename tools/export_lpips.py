"""Save a full LPIPS state_dict (ImageNet trunk + calibrated linear layers) for offline training.

Run once on a machine that can download the torchvision weights, then point
`loss.lpips_weights` at the file on the machines that cannot:

    python tools/export_lpips.py --net vgg -o lpips_vgg_full.pth
"""

import argparse

import torch


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--net", default="vgg", choices=["vgg", "alex", "squeeze"])
    p.add_argument("-o", "--output", required=True)
    args = p.parse_args()
    import lpips

    model = lpips.LPIPS(net=args.net, pnet_rand=False, verbose=False)
    state = model.state_dict()
    torch.save(state, args.output)
    print(f"wrote {args.output}: {len(state)} tensors (LPIPS-{args.net}, trunk + lins)")


if __name__ == "__main__":
    main()
