# Images the tests push to their loopback registry, built from Debian's own packages so that no
# registry on the internet is needed. Dot-sourced by build.ps1.

function Build-DebianTestImage {
    <#
    Builds a Debian root holding -Package (and what it depends on) as one layer tar with
    mmdebstrap, and returns its path. The tar is cached under -CacheDir by suite and packages, so
    only a clean clone builds it; it is written through a temp file, so an interrupted build never
    leaves a tar that looks finished.
    #>
    param(
        [Parameter(Mandatory)] [string] $Name,
        [Parameter(Mandatory)] [string[]] $Package,
        [Parameter(Mandatory)] [string] $CacheDir,
        [string] $Suite = 'bookworm',
        [string] $Mirror = 'http://deb.debian.org/debian'
    )
    $key = "$Suite $(($Package | Sort-Object) -join ',')"
    $hash = [Convert]::ToHexString(
        [Security.Cryptography.SHA256]::HashData([Text.Encoding]::UTF8.GetBytes($key))).Substring(0, 12)
    $tar = Join-Path $CacheDir "$Name-$($hash.ToLowerInvariant()).tar"
    if (Test-Path $tar) { return $tar }

    if (-not (Get-Command mmdebstrap -ErrorAction Ignore)) {
        throw 'mmdebstrap is missing; run ./build.ps1 Bootstrap (Debian: sudo apt-get install mmdebstrap).'
    }
    New-Item -ItemType Directory -Force $CacheDir | Out-Null
    $temp = "$tar.tmp"
    Remove-Item $temp -ErrorAction Ignore
    # The essential set plus the packages: no apt, and no documentation, man pages or translations,
    # which only make the layer larger.
    $arguments = @(
        '--quiet', '--variant=essential', "--include=$($Package -join ',')", '--format=tar',
        '--dpkgopt=path-exclude=/usr/share/doc/*', '--dpkgopt=path-exclude=/usr/share/man/*',
        '--dpkgopt=path-exclude=/usr/share/locale/*', $Suite, $temp, $Mirror
    )
    Write-Host "Test images: building '$Name' from Debian $Suite packages: $($Package -join ', ')"
    & mmdebstrap @arguments
    if ($LASTEXITCODE -ne 0) {
        Remove-Item $temp -ErrorAction Ignore
        throw "mmdebstrap failed (exit code $LASTEXITCODE) building the test image '$Name'."
    }
    Move-Item $temp $tar -Force
    return $tar
}
