# The workspace node image: the EKS-optimized Amazon Linux 2023 AMI for one Kubernetes version,
# plus gVisor (runsc + containerd-shim-runsc-v1, checksum-verified) registered with containerd as
# the runtime handler `runsc` through a nodeadm NodeConfig drop-in (see
# scripts/configure-containerd-runsc.sh for why that route).
#
# The AMI name and the tag below are what the EC2NodeClass in manifests/ selects: change them
# together.
#
#   packer init packer/
#   packer build -var region=eu-west-1 -var architecture=arm64 packer/

variable "region" {
  type        = string
  description = "AWS region to build in (the AMI is registered there)."
  default     = "us-east-1"
}

variable "architecture" {
  type        = string
  description = "CPU architecture: x86_64 or arm64 (the EKS AMI names use these spellings)."
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "The architecture must be x86_64 or arm64."
  }
}

variable "kubernetes_version" {
  type        = string
  description = "Kubernetes minor version of the EKS-optimized base AMI (and of the cluster's nodes)."
  default     = "1.32"

  validation {
    condition     = can(regex("^1\\.[0-9]+$", var.kubernetes_version))
    error_message = "The kubernetes_version must look like 1.32."
  }
}

variable "gvisor_release" {
  type        = string
  description = "Pinned gVisor release (a dated release from gVisor's release bucket)."
  default     = "20250707.0"

  validation {
    condition     = can(regex("^[0-9]{8}(\\.[0-9]+)?$", var.gvisor_release))
    error_message = "The gvisor_release must be a dated release such as 20250707.0, never latest."
  }
}

# Required: a build without the reviewed digests fails here, and again in install-gvisor.sh.
# The empty default keeps `packer inspect` and syntax checks working without them.
variable "gvisor_runsc_sha512" {
  type        = string
  description = "Pin of runsc's SHA-512 for gvisor_release and architecture (recorded when the release was reviewed)."
  default     = ""

  validation {
    condition     = can(regex("^[0-9a-fA-F]{128}$", var.gvisor_runsc_sha512))
    error_message = "The gvisor_runsc_sha512 must be the reviewed runsc's SHA-512 (128 hex digits) for this release and architecture."
  }
}

variable "gvisor_shim_sha512" {
  type        = string
  description = "Pin of containerd-shim-runsc-v1's SHA-512 for gvisor_release and architecture."
  default     = ""

  validation {
    condition     = can(regex("^[0-9a-fA-F]{128}$", var.gvisor_shim_sha512))
    error_message = "The gvisor_shim_sha512 must be the reviewed containerd-shim-runsc-v1's SHA-512 (128 hex digits) for this release and architecture."
  }
}

variable "source_ami_owner" {
  type        = string
  description = "Account that publishes the EKS-optimized AMIs (602401143452 in most commercial regions; see the EKS docs for the others)."
  default     = "602401143452"
}

variable "instance_type" {
  type        = string
  description = "Build instance type; empty picks a general-purpose type for the architecture."
  default     = ""
}

variable "subnet_id" {
  type        = string
  description = "Subnet for the build instance; empty uses the default VPC."
  default     = ""
}

variable "ami_regions" {
  type        = list(string)
  description = "Extra regions to copy the finished AMI to."
  default     = []
}

locals {
  build_time    = formatdate("YYYYMMDDhhmmss", timestamp())
  instance_type = var.instance_type != "" ? var.instance_type : (var.architecture == "arm64" ? "m7g.large" : "m7i.large")
  gvisor_arch   = var.architecture == "arm64" ? "aarch64" : "x86_64"

  # The EC2NodeClass selects workspace-sandbox-al2023-gvisor-* AMIs carrying this tag.
  ami_name = "workspace-sandbox-al2023-gvisor-${var.kubernetes_version}-${var.architecture}-${local.build_time}"
  ami_tags = {
    "workspace-sandbox.io/ami"                = "al2023-gvisor"
    "workspace-sandbox.io/kubernetes-version" = var.kubernetes_version
    "workspace-sandbox.io/gvisor-release"     = var.gvisor_release
    "workspace-sandbox.io/architecture"       = var.architecture
    "workspace-sandbox.io/source-ami"         = "{{ .SourceAMI }}"
    "workspace-sandbox.io/source-ami-name"    = "{{ .SourceAMIName }}"
  }
}

source "amazon-ebs" "al2023_gvisor" {
  region        = var.region
  instance_type = local.instance_type
  subnet_id     = var.subnet_id != "" ? var.subnet_id : null
  ssh_username  = "ec2-user"

  # The newest EKS-optimized AL2023 AMI for this Kubernetes version and architecture, e.g.
  # amazon-eks-node-al2023-x86_64-standard-1.32-v20250715.
  source_ami_filter {
    owners      = [var.source_ami_owner]
    most_recent = true
    filters = {
      name                = "amazon-eks-node-al2023-${var.architecture}-standard-${var.kubernetes_version}-v*"
      architecture        = var.architecture
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
  }

  ami_name        = local.ami_name
  ami_description = "workspace-sandbox node: EKS-optimized AL2023 for Kubernetes ${var.kubernetes_version} (${var.architecture}) with gVisor ${var.gvisor_release}"
  ami_regions     = var.ami_regions
  tags            = local.ami_tags
  snapshot_tags   = local.ami_tags
  run_tags        = { "workspace-sandbox.io/packer-build" = local.ami_name }

  # IMDSv2 only, for the build instance and for every instance launched from the AMI.
  imds_support = "v2.0"
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  launch_block_device_mappings {
    device_name           = "/dev/xvda"
    volume_size           = 20
    volume_type           = "gp3"
    iops                  = 3000
    throughput            = 125
    encrypted             = true
    delete_on_termination = true
  }
}

build {
  sources = ["source.amazon-ebs.al2023_gvisor"]

  provisioner "file" {
    source      = "${path.root}/files/"
    destination = "/tmp/workspace-sandbox-files"
  }

  provisioner "shell" {
    environment_vars = [
      "GVISOR_RELEASE=${var.gvisor_release}",
      "GVISOR_ARCH=${local.gvisor_arch}",
      "GVISOR_RUNSC_SHA512=${var.gvisor_runsc_sha512}",
      "GVISOR_SHIM_SHA512=${var.gvisor_shim_sha512}",
      "FILES_DIR=/tmp/workspace-sandbox-files",
    ]
    execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    scripts = [
      "${path.root}/scripts/install-gvisor.sh",
      "${path.root}/scripts/configure-containerd-runsc.sh",
    ]
  }

  # What the build produced, for the release notes and for pinning an AMI ID when needed.
  post-processor "manifest" {
    output     = "packer-manifest.json"
    strip_path = true
    custom_data = {
      gvisor_release     = var.gvisor_release
      kubernetes_version = var.kubernetes_version
      architecture       = var.architecture
    }
  }
}
