"""Guest images: the offline Debian build, user-supplied cloud images, per-VM disks and seeds."""
