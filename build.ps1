#!/usr/bin/env pwsh
<#
.SYNOPSIS
    Builds, tests and packages the Microsandbox module.
.DESCRIPTION
    Tasks run in order of their dependencies:
      Bootstrap  installs what the host needs (QEMU, cpio, a C toolchain for NativeAOT) where it
                 can (Debian/Ubuntu as root), else stops naming what to install.
      Build      the engine, cmdlets and sandbox runtime into out/Microsandbox, with MAML help.
      Guest      the guest agent (NativeAOT) and the kernel + initramfs, cached by version.
      Test       xUnit for protocol and engine, then Pester against the built module in a fresh pwsh
                 (on Linux, first a Debian image with python3 for the registry tests, cached).
      Package    a .nupkg of the module in out/package, installable with Install-Module.
.EXAMPLE
    dotnet tool restore; dotnet pwsh ./build.ps1 Test
#>
[CmdletBinding()]
param(
    # Several tasks may follow each other: ./build.ps1 Build Guest
    [Parameter(Position = 0, ValueFromRemainingArguments)]
    [ValidateSet('Bootstrap', 'Build', 'Guest', 'Test', 'Package', 'Clean')]
    [string[]] $Task = @('Build', 'Guest'),

    [ValidateSet('Debug', 'Release')]
    [string] $Configuration = 'Release',

    # Pester tag filter for quick local runs (for example -Tag Errors).
    [string[]] $Tag
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version 3.0
$root = $PSScriptRoot
$out = Join-Path $root 'out'
$moduleDir = Join-Path $out 'Microsandbox'
$cacheDir = Join-Path $root '.cache'
$pesterVersion = '5.7.1'
. (Join-Path $root 'build/Guest.ps1')
. (Join-Path $root 'build/Help.ps1')
. (Join-Path $root 'build/TestImages.ps1')

function Invoke-Native {
    param([string] $Command, [string[]] $Arguments)
    Write-Verbose "$Command $($Arguments -join ' ')"
    & $Command @Arguments
    if ($LASTEXITCODE -ne 0) { throw "'$Command $($Arguments -join ' ')' failed with exit code $LASTEXITCODE." }
}

function Invoke-Bootstrap {
    if (-not $IsLinux) {
        Write-Host 'Bootstrap: only the build and the tests that need no VM run on this OS.'
        return
    }

    # command -> Debian package that provides it
    $needed = [ordered]@{
        'qemu-system-x86_64' = 'qemu-system-x86'
        'qemu-img'           = 'qemu-utils'
        'cpio'               = 'cpio'
        'xz'                 = 'xz-utils'
        'dpkg-deb'           = 'dpkg'
        'clang'              = 'clang'
        'setpriv'            = 'util-linux'
        'mkfs.ext4'          = 'e2fsprogs'
        'tar'                = 'tar'
        # The EROFS writer's tests check what it wrote with the reference tools; the image bench
        # compares against mkfs.erofs.
        'fsck.erofs'         = 'erofs-utils'
        # The image tests pull from a real registry on loopback, one with htpasswd (bcrypt) auth.
        'docker-registry'    = 'docker-registry'
        'htpasswd'           = 'apache2-utils'
        # Builds the Debian image with python3 that the tests push to that registry.
        'mmdebstrap'         = 'mmdebstrap'
        # The import tests write OCI layouts and docker archives from that registry.
        'skopeo'             = 'skopeo'
    }
    $missing = @($needed.Keys | Where-Object { -not (Get-Command $_ -ErrorAction Ignore) } |
        ForEach-Object { $needed[$_] })
    if (-not (Test-Path '/usr/include/zlib.h')) { $missing += 'zlib1g-dev' }
    # The terminal helper links the C library statically.
    if (-not (Test-Path '/usr/lib/x86_64-linux-gnu/libc.a')) { $missing += 'libc6-dev' }
    $canInstall = (Get-Command apt-get -ErrorAction Ignore) -and ((& id -u) -eq '0')
    # The Guest task downloads the kernel package by the version apt's lists name; lists from an
    # old machine image point at files the mirror no longer has.
    $lists = @(Get-ChildItem /var/lib/apt/lists -Filter '*_Packages*' -ErrorAction Ignore)
    # A machine that never ran apt-get update has no lists at all (and Measure-Object no Maximum).
    $stale = $lists.Count -eq 0 -or
        ($lists | Measure-Object LastWriteTime -Maximum).Maximum -lt (Get-Date).AddDays(-1)
    if ($canInstall -and ($missing.Count -gt 0 -or $stale)) {
        Invoke-Native apt-get @('update', '-qq')
    }

    if ($missing.Count -eq 0) {
        Write-Host 'Bootstrap: host tools present.'
        return
    }

    if (-not $canInstall) {
        throw "Missing host packages: $($missing -join ', '). Install them (Debian/Ubuntu: " +
            "sudo apt-get install $($missing -join ' ')) and run the build again."
    }

    Write-Host "Bootstrap: installing $($missing -join ', ')"
    $env:DEBIAN_FRONTEND = 'noninteractive'
    Invoke-Native apt-get (@('install', '-y', '-qq', '--no-install-recommends') + $missing)
}

function Invoke-Build {
    $staging = Join-Path $out 'obj/module'
    Remove-Item $staging -Recurse -Force -ErrorAction Ignore
    Invoke-Native dotnet @('publish', "$root/src/Microsandbox.PowerShell", '-c', $Configuration, '-o', $staging,
        '--nologo', '-v', 'quiet')

    New-Item -ItemType Directory -Force $moduleDir | Out-Null
    Get-ChildItem $moduleDir -Exclude 'guest' | Remove-Item -Recurse -Force
    # PowerShell and the SDK bring their own copies of these; shipping them only invites conflicts.
    Get-ChildItem $staging -File |
        Where-Object { $_.Name -notmatch '^(System\.Management\.Automation|Microsoft\.PowerShell)' -and
            $_.Extension -in '.dll', '.pdb' } |
        Copy-Item -Destination $moduleDir
    # SQLite's native library sits beside the assemblies, where .NET probes for a module's
    # P/Invoke targets (a module has no deps.json to point into runtimes/).
    $natives = @{ 'linux-x64' = 'libe_sqlite3.so'; 'win-x64' = 'e_sqlite3.dll'; 'osx-arm64' = 'libe_sqlite3.dylib' }
    foreach ($rid in $natives.Keys) {
        $lib = Join-Path $staging "runtimes/$rid/native/$($natives[$rid])"
        if (Test-Path $lib) { Copy-Item $lib $moduleDir }
    }

    Copy-Item "$root/Microsandbox.psd1", "$root/Microsandbox.psm1", "$root/Microsandbox.format.ps1xml" $moduleDir
    ConvertTo-MamlHelp -DocsPath (Join-Path $root 'docs') `
        -OutputPath (Join-Path $moduleDir 'en-US/Microsandbox.PowerShell.dll-Help.xml')

    if ($IsLinux) {
        Invoke-Native dotnet @('publish', "$root/src/Microsandbox.Runtime", '-c', 'Release', '-o', "$out/obj/runtime",
            '--nologo', '-v', 'quiet')
        Copy-Item "$out/obj/runtime/msb-runtime" $moduleDir
    }
    Write-Host "Build: module in $moduleDir"
}

function Invoke-Guest {
    if (-not $IsLinux) { throw 'The guest assets are built on Linux (they need dpkg-deb and cpio).' }
    Invoke-Native dotnet @('publish', "$root/src/Microsandbox.Agent", '-c', 'Release', '-o', "$out/obj/agent",
        '--nologo', '-v', 'quiet')
    # The terminal helper is C, linked statically, so it runs in any sandbox root.
    Invoke-Native clang @('-static', '-O2', '-s', '-Wall', '-Wextra', '-Werror', '-o', "$out/obj/agent/msb-exec",
        "$root/src/Microsandbox.Agent/native/msb-exec.c")
    Build-GuestAssets -AgentPath "$out/obj/agent/msb-agent" -ExecHelperPath "$out/obj/agent/msb-exec" `
        -OutDir (Join-Path $moduleDir 'guest') -CacheDir (Join-Path $cacheDir 'guest')
    Write-Host "Guest: assets in $moduleDir/guest"
}

function Get-PesterModule {
    $dir = Join-Path $cacheDir "pester/$pesterVersion"
    $manifest = Join-Path $dir 'Pester.psd1'
    if (-not (Test-Path $manifest)) {
        # Pester comes from NuGet, not a PowerShell gallery: a package download needs no project.
        $proj = Join-Path $cacheDir 'pester/download.proj'
        New-Item -ItemType Directory -Force (Split-Path $proj) | Out-Null
        Set-Content $proj @"
<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup><TargetFramework>net10.0</TargetFramework></PropertyGroup>
  <ItemGroup><PackageDownload Include="Pester" Version="[$pesterVersion]" /></ItemGroup>
</Project>
"@
        $packages = Join-Path $cacheDir 'pester/packages'
        Invoke-Native dotnet @('restore', $proj, '--packages', $packages, '--nologo', '-v', 'quiet')
        $tools = Join-Path $packages "pester/$pesterVersion/tools"
        Remove-Item $dir -Recurse -Force -ErrorAction Ignore
        Copy-Item $tools $dir -Recurse
    }
    return $manifest
}

function Invoke-Test {
    $trx = Join-Path $out 'xunit-results.trx'
    Remove-Item $trx -ErrorAction Ignore
    # Off Linux only what needs no VM runs: the protocol tests, and Pester without VM tags.
    $filter = @(if (-not $IsLinux) { '--filter', 'FullyQualifiedName~Microsandbox.Tests.Protocol' })
    & dotnet test "$root/tests/Microsandbox.Tests" -c $Configuration --nologo @filter `
        --logger 'console;verbosity=normal' --logger "trx;LogFileName=$trx"
    $xunitExit = $LASTEXITCODE
    $xunit = if (Test-Path $trx) { ([xml](Get-Content $trx -Raw)).TestRun.ResultSummary.Counters }

    $pesterManifest = Get-PesterModule
    $pythonLayer = if ($IsLinux) {
        Build-DebianTestImage -Name python -Package python3 -CacheDir (Join-Path $cacheDir 'test-images')
    }
    $pwsh = (Get-Process -Id $PID).Path
    # Under the .NET tool this process is dotnet running pwsh.dll; a fresh pwsh runs that same file.
    $pwshArgs = @(if ($pwsh -match 'dotnet(\.exe)?$') { "$PSHOME/pwsh.dll" })

    # A home of the tests' own, so a developer's sandboxes are never touched; the accelerator
    # probe's answer is carried over so each run does not probe again.
    $testHome = Join-Path $out 'test-home'
    $probe = Join-Path $testHome 'cache/accelerator.json'
    $kept = if (Test-Path $probe) { Get-Content $probe -Raw }
    if (Test-Path $testHome) {
        $env:MSB_HOME = $testHome
        $cleanup = "Import-Module '$moduleDir/Microsandbox.psd1'; Get-Sandbox | Remove-Sandbox -Force"
        try { & $pwsh @pwshArgs -NoProfile -NonInteractive -Command $cleanup }
        finally { Remove-Item Env:MSB_HOME }
        Remove-Item $testHome -Recurse -Force
    }
    if ($kept) {
        New-Item -ItemType Directory -Force (Split-Path $probe) | Out-Null
        Set-Content $probe $kept -NoNewline
    }

    # A fresh process, so the tests see the built module exactly as a user who imports it would.
    $counts = Join-Path $out 'pester-counts.json'
    Remove-Item $counts -ErrorAction Ignore
    $script = @"
`$ErrorActionPreference = 'Stop'
Import-Module '$pesterManifest' -Force
`$config = New-PesterConfiguration
`$config.Run.Path = '$root/tests/pester'
`$config.Run.PassThru = `$true
`$config.Output.Verbosity = 'Detailed'
`$config.TestResult.Enabled = `$true
`$config.TestResult.OutputPath = '$out/pester-results.xml'
$(if ($Tag) { "`$config.Filter.Tag = @('$($Tag -join "','")')" })
$(if (-not $IsLinux) { "`$config.Filter.ExcludeTag = @('VM', 'Linux')" })
`$env:MSB_TEST_MODULE = '$moduleDir/Microsandbox.psd1'
`$env:MSB_HOME = '$testHome'
`$env:MSB_TEST_PYTHON_LAYER = '$pythonLayer'
`$r = Invoke-Pester -Configuration `$config
@{
    Passed = `$r.PassedCount
    Failed = `$r.FailedCount + `$r.FailedBlocksCount + `$r.FailedContainersCount
    Skipped = `$r.SkippedCount + `$r.NotRunCount
} | ConvertTo-Json | Set-Content '$counts'
"@
    & $pwsh @pwshArgs -NoProfile -NonInteractive -Command $script
    $pester = if (Test-Path $counts) { Get-Content $counts -Raw | ConvertFrom-Json }

    # One closing line for both runners, in the form CI systems read.
    $passed = [int]$xunit.passed + [int]$pester.Passed
    $failed = [int]$xunit.failed + [int]$pester.Failed
    $skipped = [int]$xunit.notExecuted + [int]$pester.Skipped
    Write-Host "Tests: $passed passed, $failed failed, $skipped skipped"
    if ($xunitExit -ne 0 -or -not $xunit) { throw "xUnit failed (exit code $xunitExit)." }
    if (-not $pester -or $failed -gt 0) { throw 'Pester reported failures; see the output above.' }
}

function Invoke-Package {
    $manifest = Import-PowerShellDataFile (Join-Path $moduleDir 'Microsandbox.psd1')
    $version = $manifest.ModuleVersion
    $packageDir = Join-Path $out 'package'
    New-Item -ItemType Directory -Force $packageDir | Out-Null
    # A local repository folder is what Install-Module reads: register it and install from it.
    $repo = "MicrosandboxLocal$PID"
    Register-PSResourceRepository -Name $repo -Uri $packageDir -Trusted -ErrorAction Stop
    try {
        Publish-PSResource -Path $moduleDir -Repository $repo -SkipDependenciesCheck
    }
    finally {
        Unregister-PSResourceRepository -Name $repo
    }
    Write-Host "Package: $packageDir/Microsandbox.$version.nupkg"
}

$order = 'Clean', 'Bootstrap', 'Build', 'Guest', 'Test', 'Package'
$wanted = [System.Collections.Generic.HashSet[string]]::new([string[]]$Task)
if ($wanted.Contains('Test')) {
    $needs = if ($IsLinux) { 'Bootstrap', 'Build', 'Guest' } else { 'Bootstrap', 'Build' }
    $needs | ForEach-Object { $null = $wanted.Add($_) }
}
if ($wanted.Contains('Guest') -or $wanted.Contains('Package')) { $null = $wanted.Add('Build') }
# A package without the guest assets could not boot anything.
if ($wanted.Contains('Package') -and $IsLinux) { $null = $wanted.Add('Guest') }
foreach ($step in $order) {
    if (-not $wanted.Contains($step)) { continue }
    $clock = [Diagnostics.Stopwatch]::StartNew()
    switch ($step) {
        'Clean' { Remove-Item $out -Recurse -Force -ErrorAction Ignore }
        'Bootstrap' { Invoke-Bootstrap }
        'Build' { Invoke-Build }
        'Guest' { Invoke-Guest }
        'Test' { Invoke-Test }
        'Package' { Invoke-Package }
    }
    Write-Host ("{0} finished in {1:0.0} s" -f $step, $clock.Elapsed.TotalSeconds)
}
