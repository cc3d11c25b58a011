#!/usr/bin/env pwsh
<#
.SYNOPSIS
    Image measurements: pull and convert beside skopeo + mkfs.erofs, sandbox create time on a
    warm cache, and the disk used by N sandboxes of one image beside one.
.DESCRIPTION
    Starts Debian's docker-registry on loopback, pushes the built-in image's layer (or the layer
    tar of -LayerPath, such as the Debian python3 image build.ps1 Test builds in
    .cache/test-images) to it as an OCI image, then measures in one invocation:
      - our pull into an empty cache plus the EROFS base build, beside `skopeo copy` to an OCI
        layout, extracting the layer and `mkfs.erofs` of the result (the distribution's tools);
      - New-Sandbox of that image with the cache warm;
      - the bytes on disk (allocated, not apparent) of the home after one sandbox and after N.
    Needs skopeo and erofs-utils (apt-get install skopeo erofs-utils) besides the test tools.
    Run after `./build.ps1 Build Guest`. Uses its own MSB_HOME under out/.
.EXAMPLE
    dotnet pwsh ./bench/images.ps1 -Count 10
.EXAMPLE
    dotnet pwsh ./bench/images.ps1 -LayerPath (Get-Item .cache/test-images/python-*.tar)
#>
[CmdletBinding()]
param(
    [int] $Count = 10,
    [int] $Iterations = 3,
    [string] $LayerPath,
    [string] $Module = (Join-Path $PSScriptRoot '../out/Microsandbox/Microsandbox.psd1')
)

$ErrorActionPreference = 'Stop'
Import-Module $Module -Force
. (Join-Path $PSScriptRoot '../tests/pester/TestHelpers.ps1')
$env:MSB_TEST_MODULE_PATH = (Resolve-Path $Module).Path
$env:MSB_HOME = Join-Path $PSScriptRoot '../out/bench-images-home'
Remove-Item $env:MSB_HOME -Recurse -Force -ErrorAction Ignore
New-Item -ItemType Directory -Force $env:MSB_HOME | Out-Null
$work = Join-Path ([IO.Path]::GetTempPath()) "msb-bench-images-$PID"
New-Item -ItemType Directory -Force $work | Out-Null

function Get-Median([double[]] $Values) { ($Values | Sort-Object)[[int][Math]::Floor($Values.Count / 2)] }
function Get-AllocatedBytes([string] $Path) { [long](& du -s --block-size=1 $Path).Split("`t")[0] }

$registry = Start-TestRegistry
try {
    $image = "127.0.0.1:$($registry.Port)/bench/image:1"
    $layer = if ($LayerPath) { (Resolve-Path $LayerPath).Path } else { Join-Path (Split-Path $Module) 'guest/rootfs.tar' }
    $pushed = Publish-TestImage -Reference $image -LayerPath $layer
    '{0}: {1:0.0} MiB as a tar, {2:0.0} MiB gzipped' -f (Split-Path $layer -Leaf), ((Get-Item $layer).Length / 1MB),
        ($pushed.LayerSize / 1MB) | Write-Host

    $ours = foreach ($i in 1..$Iterations) {
        Remove-Item (Join-Path $env:MSB_HOME 'cache') -Recurse -Force -ErrorAction Ignore
        $engine = [Microsandbox.Engine.SandboxEngine]::new([Microsandbox.Engine.SandboxHome]::FromEnvironment())
        $clock = [Diagnostics.Stopwatch]::StartNew()
        $null = $engine.Images.PullAsync($image, 'Always', $null, $null, [Threading.CancellationToken]::None).
            GetAwaiter().GetResult()
        $clock.Elapsed.TotalMilliseconds
    }

    $theirs = foreach ($i in 1..$Iterations) {
        $dir = Join-Path $work "skopeo-$i"
        New-Item -ItemType Directory -Force $dir | Out-Null
        $clock = [Diagnostics.Stopwatch]::StartNew()
        & skopeo copy --quiet --src-tls-verify=false "docker://$image" "oci:$dir/layout:latest"
        if ($LASTEXITCODE -ne 0) { throw 'skopeo copy failed' }
        $manifest = Get-Content "$dir/layout/index.json" -Raw | ConvertFrom-Json
        $m = Get-Content ("$dir/layout/blobs/sha256/" + $manifest.manifests[0].digest.Split(':')[1]) -Raw | ConvertFrom-Json
        New-Item -ItemType Directory "$dir/root" | Out-Null
        foreach ($layer in $m.layers) {
            & tar -xzf ("$dir/layout/blobs/sha256/" + $layer.digest.Split(':')[1]) -C "$dir/root" --numeric-owner
        }
        & mkfs.erofs --quiet "$dir/base.erofs" "$dir/root"
        if ($LASTEXITCODE -ne 0) { throw 'mkfs.erofs failed' }
        $clock.Elapsed.TotalMilliseconds
        Remove-Item $dir -Recurse -Force
    }

    $null = New-Sandbox -Name warm-0 -Image $image -WarningAction SilentlyContinue
    $create = foreach ($i in 1..$Iterations) {
        $clock = [Diagnostics.Stopwatch]::StartNew()
        $null = New-Sandbox -Name "warm-$i" -Image $image -WarningAction SilentlyContinue
        $clock.Elapsed.TotalMilliseconds
        Remove-Sandbox -Name "warm-$i" -Force
    }

    $one = Get-AllocatedBytes $env:MSB_HOME
    foreach ($i in 2..$Count) { $null = New-Sandbox -Name "disk-$i" -Image $image -WarningAction SilentlyContinue }
    $many = Get-AllocatedBytes $env:MSB_HOME

    [pscustomobject]@{ Measure = "Pull + EROFS build, ours, median of $Iterations"; Value = '{0:0} ms' -f (Get-Median $ours) }
    [pscustomobject]@{ Measure = "skopeo copy + tar + mkfs.erofs, median of $Iterations"; Value = '{0:0} ms' -f (Get-Median $theirs) }
    [pscustomobject]@{ Measure = 'Ours / skopeo + mkfs.erofs'; Value = '{0:0.00}x' -f ((Get-Median $ours) / (Get-Median $theirs)) }
    [pscustomobject]@{ Measure = "New-Sandbox on a warm cache, median of $Iterations"; Value = '{0:0} ms' -f (Get-Median $create) }
    [pscustomobject]@{ Measure = 'Home on disk, 1 sandbox'; Value = '{0:0.0} MiB' -f ($one / 1MB) }
    [pscustomobject]@{ Measure = "Home on disk, $Count sandboxes"; Value = '{0:0.0} MiB' -f ($many / 1MB) }
    [pscustomobject]@{ Measure = "$Count sandboxes / 1"; Value = '{0:0.00}x' -f ($many / $one) }
}
finally {
    Get-Sandbox | Remove-Sandbox -Force
    Stop-TestRegistry $registry
    Remove-Item $work -Recurse -Force -ErrorAction Ignore
}
