#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0' }
# Import-SandboxImage on real exports: Debian's skopeo copies an image from the loopback registry
# into an OCI layout, an OCI archive and a docker archive, then the registry is stopped, so every
# import is offline. A home of their own, so that the cache holds exactly what these tests put
# there. Only the last test boots a VM.

BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $env:MSB_TEST_MODULE_PATH = Import-MicrosandboxUnderTest
    $script:OuterHome = $env:MSB_HOME
    $env:MSB_HOME = Join-Path ([IO.Path]::GetTempPath()) "msb-import-$PID"
    $script:Cache = Join-Path $env:MSB_HOME 'cache'
    # The accelerator probe's answer is carried over, as the Test task does, so the boot is not probed again.
    $probe = if ($script:OuterHome) { Join-Path $script:OuterHome 'cache/accelerator.json' }
    if ($probe -and (Test-Path $probe)) {
        New-Item -ItemType Directory -Force $script:Cache | Out-Null
        Copy-Item $probe $script:Cache
    }

    $script:Exports = Join-Path ([IO.Path]::GetTempPath()) "msb-import-exports-$PID"
    New-Item -ItemType Directory -Force $script:Exports | Out-Null
    $registry = Start-TestRegistry
    try {
        $source = "127.0.0.1:$($registry.Port)/busybox:import"
        $script:Pushed = Publish-TestImage -Reference $source -Marker import
        $copies = @{
            Layout  = "oci:$script:Exports/layout:v1"
            Archive = "oci-archive:$script:Exports/image.tar:v1"
            Docker  = "docker-archive:$script:Exports/docker.tar:imported/docker:1"
        }
        foreach ($destination in $copies.Values) {
            $out = & skopeo --insecure-policy copy --quiet --src-tls-verify=false "docker://$source" $destination 2>&1
            if ($LASTEXITCODE -ne 0) { throw "skopeo copy to $destination failed: $out" }
        }
    }
    finally {
        Stop-TestRegistry $registry
    }

    function Get-BlobCount { @(Get-ChildItem "$script:Cache/blobs/sha256" -File -ErrorAction Ignore).Count }
    function Test-Blob([string] $Digest) { Test-Path "$script:Cache/blobs/sha256/$($Digest.Substring(7))" }
}

AfterAll {
    Get-Sandbox -ErrorAction Ignore | Remove-Sandbox -Force
    Remove-Item $script:Exports -Recurse -Force -ErrorAction Ignore
    Remove-Item $env:MSB_HOME -Recurse -Force -ErrorAction Ignore
    $env:MSB_HOME = $script:OuterHome
}

Describe 'Import-SandboxImage' -Tag Images {
    It 'refuses a missing path and a file that is no export, with their ids and the path as target' {
        $r = Invoke-Captured { Import-SandboxImage -Path "$script:Exports/nothing-here" }
        Get-ErrorId $r.Errors[0] | Should -Be 'ImportPathNotFound'
        "$($r.Errors[0].CategoryInfo.Category)" | Should -Be 'ObjectNotFound'

        $junk = Join-Path $script:Exports 'junk.tar'
        [IO.File]::WriteAllBytes($junk, [byte[]](1..5000 | ForEach-Object { $_ % 251 }))
        $r = Invoke-Captured { Import-SandboxImage -Path $junk }
        Get-ErrorId $r.Errors[0] | Should -Be 'ImageLayoutInvalid'
        "$($r.Errors[0].CategoryInfo.Category)" | Should -Be 'InvalidData'
        $r.Errors[0].TargetObject | Should -Be $junk
        Get-SandboxImage | Should -BeNullOrEmpty
    }

    It 'refuses a layout with a corrupted layer with BlobDigestMismatch, caching nothing of it' {
        $bad = Join-Path $script:Exports 'corrupt'
        Copy-Item "$script:Exports/layout" $bad -Recurse
        $blob = "$bad/blobs/sha256/$($script:Pushed.Layer.Substring(7))"
        $bytes = [IO.File]::ReadAllBytes($blob)
        $bytes[100] = $bytes[100] -bxor 0xff
        [IO.File]::WriteAllBytes($blob, $bytes)

        $r = Invoke-Captured { Import-SandboxImage -Path $bad -Reference imported/corrupt }
        Get-ErrorId $r.Errors[0] | Should -Be 'BlobDigestMismatch'
        $r.Errors[0].TargetObject | Should -Be $bad
        Get-SandboxImage | Should -BeNullOrEmpty
        Test-Blob $script:Pushed.Layer | Should -BeFalse
        Get-BlobCount | Should -Be 0
        Get-ChildItem "$script:Cache/incoming" -File | Should -BeNullOrEmpty
    }

    It 'asks for -Reference when the layout names its image by a tag alone, and imports nothing on -WhatIf' {
        $r = Invoke-Captured { Import-SandboxImage -Path "$script:Exports/layout" }
        Get-ErrorId $r.Errors[0] | Should -Be 'ImageReferenceRequired'
        Import-SandboxImage -Path "$script:Exports/layout" -Reference imported/layout -WhatIf
        Get-SandboxImage | Should -BeNullOrEmpty
    }

    It 'imports an OCI layout folder offline, the layout tag completing -Reference' {
        $image = Import-SandboxImage -Path "$script:Exports/layout" -Reference imported/layout -ErrorAction Stop
        $image.Reference | Should -Be 'docker.io/imported/layout:v1'
        $image.Digest | Should -Be $script:Pushed.Manifest
        $image.Layers | Should -Be 1
        $image.BasePath | Should -Exist
        Test-Blob $script:Pushed.Layer | Should -BeTrue
    }

    It 'imports an OCI archive piped from Get-ChildItem, by a path relative to the current location' {
        Push-Location $script:Exports
        try {
            $image = Get-ChildItem image.tar | Import-SandboxImage -Reference imported/archive:v1 -ErrorAction Stop
            $image.Reference | Should -Be 'docker.io/imported/archive:v1'
            $image.Digest | Should -Be $script:Pushed.Manifest

            $again = Import-SandboxImage -Path ./image.tar -Reference imported/archive:again -ErrorAction Stop
            $again.Digest | Should -Be $script:Pushed.Manifest
        }
        finally {
            Pop-Location
        }
    }

    It 'imports a docker archive under its RepoTags, and lists every import' {
        $image = Import-SandboxImage -Path "$script:Exports/docker.tar" -ErrorAction Stop
        $image.Reference | Should -Be 'docker.io/imported/docker:1'
        $image.Layers | Should -Be 1
        $image.BasePath | Should -Exist

        (Get-SandboxImage).Reference | Should -Be @(
            'docker.io/imported/archive:again', 'docker.io/imported/archive:v1', 'docker.io/imported/docker:1',
            'docker.io/imported/layout:v1')
        Get-ChildItem "$script:Cache/incoming" -File | Should -BeNullOrEmpty
    }

    It 'boots a sandbox from an imported image with -PullPolicy Never, the image config applied' -Tag VM {
        $out = New-Sandbox -Name import-boot -Image imported/docker:1 -PullPolicy Never `
            -WarningAction SilentlyContinue -ErrorAction Stop |
            Invoke-SandboxCommand -Command 'echo hi $FROM_IMAGE' -ErrorAction Stop
        $out | Should -Be 'hi yes'
        (Get-Sandbox -Name import-boot).Image | Should -Be 'docker.io/imported/docker:1'
    }

    It 'removes an imported image with Remove-SandboxImage' {
        Remove-SandboxImage -Name imported/layout:v1 -Confirm:$false -ErrorAction Stop
        Get-SandboxImage -Name imported/layout:v1 -ErrorAction Ignore | Should -BeNullOrEmpty
        Test-Blob $script:Pushed.Layer | Should -BeTrue -Because 'the archive imports still need it'
    }
}
