"""VM disks on logical volumes of their own: found through xl, exposed as files or images, torn down."""
