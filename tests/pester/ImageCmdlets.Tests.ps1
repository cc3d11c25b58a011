#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0' }
# Get-, Save- and Remove-SandboxImage against Debian's docker-registry on loopback (open, and for
# one case behind Basic auth), in a home of their own so that the cache holds exactly what these
# tests put there. Only the ImageInUse case boots a VM.

BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $env:MSB_TEST_MODULE_PATH = Import-MicrosandboxUnderTest
    $script:OuterHome = $env:MSB_HOME
    $env:MSB_HOME = Join-Path ([IO.Path]::GetTempPath()) "msb-image-cmdlets-$PID"
    $script:Cache = Join-Path $env:MSB_HOME 'cache'

    $script:Registry = Start-TestRegistry
    $script:Port = $script:Registry.Port
    $script:Pushed = Publish-TestImage -Reference "127.0.0.1:$script:Port/busybox:test" `
        -Created '2024-01-02T03:04:05Z'
    # Same layer, another config: an image that shares a blob with the first.
    $script:Twin = Publish-TestImage -Reference "127.0.0.1:$script:Port/twin:1" -Marker twin
    $script:Image = $script:Pushed.Reference

    function Get-BlobCount { @(Get-ChildItem "$script:Cache/blobs/sha256" -File -ErrorAction Ignore).Count }
    function Test-Blob([string] $Digest) { Test-Path "$script:Cache/blobs/sha256/$($Digest.Substring(7))" }
    $script:Baseline = Get-BlobCount
}

AfterAll {
    Get-Sandbox -ErrorAction Ignore | Remove-Sandbox -Force
    Stop-TestRegistry $script:Registry
    Remove-Item $env:MSB_HOME -Recurse -Force -ErrorAction Ignore
    $env:MSB_HOME = $script:OuterHome
}

Describe 'Image cmdlets' -Tag Images {
    It 'pulls an image ahead of time, and lists it with its digest, size, layers and base' {
        $saved = Save-SandboxImage -Name $script:Image -PassThru -ErrorAction Stop
        $saved.Reference | Should -Be $script:Image
        $saved.Digest | Should -Be $script:Pushed.Manifest

        $listed = Get-SandboxImage -Name $script:Image -ErrorAction Stop
        $listed.Digest | Should -Be $script:Pushed.Manifest
        $listed.Layers | Should -Be 1
        $listed.SizeBytes | Should -Be $script:Pushed.LayerSize
        $listed.Created | Should -Be ([DateTimeOffset]'2024-01-02T03:04:05Z')
        $listed.BasePath | Should -Exist
        $listed.BaseSizeBytes | Should -BeGreaterThan 0
        (Get-SandboxImage -Name '*/BUSYBOX:*').Reference | Should -Be $script:Image
        @(Get-SandboxImage).Count | Should -Be 1
    }

    It 'pulls again with -Force, writing per-layer progress from the pipeline thread, all completed' {
        $before = (Get-SandboxImage -Name $script:Image).PulledAt
        # Progress cannot be redirected, so the cmdlet runs in a PowerShell of its own to read it.
        $ps = [powershell]::Create()
        try {
            $null = $ps.AddCommand('Import-Module').AddParameter('Name', $env:MSB_TEST_MODULE_PATH)
            $null = $ps.AddStatement().AddCommand('Save-SandboxImage').AddParameter('Name', $script:Image)
            $null = $ps.AddParameter('Force')
            $null = $ps.Invoke()
            $ps.Streams.Error | Should -BeNullOrEmpty
            $progress = @($ps.Streams.Progress)
        }
        finally {
            $ps.Dispose()
        }

        $layer = @($progress | Where-Object Activity -Like 'Layer sha256:*')
        $layer | Should -Not -BeNullOrEmpty
        $last = ($layer | Where-Object RecordType -EQ Processing)[-1]
        $last.StatusDescription | Should -BeLike "* of $($script:Pushed.LayerSize.ToString('N0')) bytes"
        foreach ($id in $progress.ActivityId | Sort-Object -Unique) {
            ($progress | Where-Object ActivityId -EQ $id)[-1].RecordType | Should -Be Completed
        }

        (Get-SandboxImage -Name $script:Image).PulledAt | Should -BeGreaterThan $before
    }

    It 'reports a plain name that matches nothing as ImageNotFound, and a pattern as nothing' {
        $r = Invoke-Captured { Get-SandboxImage -Name 'no-such' }
        Get-ErrorId $r.Errors[0] | Should -Be 'ImageNotFound'
        $r.Errors[0].TargetObject | Should -Be 'docker.io/library/no-such:latest'
        $r = Invoke-Captured { Get-SandboxImage -Name 'no-such*' }
        $r.Errors | Should -BeNullOrEmpty
        $r.Output | Should -BeNullOrEmpty
    }

    It 'rejects an unknown tag with ImageNotFound, caching nothing' {
        $blobs = Get-BlobCount
        $r = Invoke-Captured { Save-SandboxImage -Name "127.0.0.1:$script:Port/busybox:nosuchtag" }
        Get-ErrorId $r.Errors[0] | Should -Be 'ImageNotFound'
        Get-BlobCount | Should -Be $blobs
        Get-ChildItem "$script:Cache/incoming" -File | Should -BeNullOrEmpty
        @(Get-SandboxImage).Count | Should -Be 1
    }

    It 'refuses an image whose layer <Case> with <Id>, keeping nothing of it' -ForEach @(
        @{ Case = 'climbs out of the root'; Id = 'LayerPathEscapes'; Target = '../evil'
            Entries = @(@{ Name = 'fine' }, @{ Name = '../evil' }) }
        @{ Case = 'is a valid gzip of no tar'; Id = 'LayerCorrupt'; Target = 'layer 1'; Entries = @() }
        @{ Case = 'writes through a symlink'; Id = 'LayerPathThroughSymlink'; Target = 'lnk/passwd'
            Entries = @(@{ Name = 'lnk'; Link = '/etc' }, @{ Name = 'lnk/passwd' }) }
    ) {
        $tar = Join-Path $TestDrive "$Id.tar"
        if ($Entries) {
            New-LayerTar -Path $tar -Entry $Entries
        }
        else {
            [IO.File]::WriteAllBytes($tar, [byte[]](1..4096 | ForEach-Object { ($_ * 7) % 251 }))
        }
        $refused = Publish-TestImage -Reference "127.0.0.1:$script:Port/refused:$($Id.ToLowerInvariant())" `
            -LayerPath $tar
        $blobs = Get-BlobCount
        $bases = @(Get-ChildItem "$script:Cache/images" -Name)

        # Twice: a second pull must not find the first one's image cached.
        foreach ($attempt in 1, 2) {
            $r = Invoke-Captured { Save-SandboxImage -Name $refused.Reference }
            Get-ErrorId $r.Errors[0] | Should -Be $Id
            $r.Errors[0].TargetObject | Should -Be $Target
            "$($r.Errors[0].CategoryInfo.Category)" | Should -Be 'InvalidArgument'
        }

        Get-SandboxImage -Name $refused.Reference -ErrorAction Ignore | Should -BeNullOrEmpty
        @(Get-SandboxImage).Count | Should -Be 1
        Get-BlobCount | Should -Be $blobs
        Test-Blob $refused.Layer | Should -BeFalse
        @(Get-ChildItem "$script:Cache/images" -Name) | Should -Be $bases
        Get-ChildItem "$script:Cache/incoming" -File | Should -BeNullOrEmpty
    }

    It 'keeps an image under -WhatIf, also from a caller and with -Force' {
        Remove-SandboxImage -Name $script:Image -WhatIf
        & { $WhatIfPreference = $true; Remove-SandboxImage -Name $script:Image -Force }
        function Remove-Through {
            [CmdletBinding(SupportsShouldProcess)] param()
            Remove-SandboxImage -Name $script:Image -Force
        }
        Remove-Through -WhatIf
        Get-SandboxImage -Name $script:Image | Should -Not -BeNullOrEmpty
    }

    It 'removes an image and the blobs only it needs, then the rest from the pipeline' {
        $null = Save-SandboxImage -Name $script:Twin.Reference -ErrorAction Stop
        $twinBase = (Get-SandboxImage -Name $script:Twin.Reference).BasePath
        $base = (Get-SandboxImage -Name $script:Image).BasePath

        Remove-SandboxImage -Name $script:Image -Confirm:$false -ErrorAction Stop
        (Get-SandboxImage).Reference | Should -Be $script:Twin.Reference
        Test-Blob $script:Pushed.Manifest | Should -BeFalse
        Test-Blob $script:Pushed.Config | Should -BeFalse
        Test-Blob $script:Pushed.Layer | Should -BeTrue -Because 'the twin image still needs it'
        $base | Should -Not -Exist
        $twinBase | Should -Exist

        Get-SandboxImage | Remove-SandboxImage -Force -ErrorAction Stop
        Get-SandboxImage | Should -BeNullOrEmpty
        Get-BlobCount | Should -Be $script:Baseline
        $twinBase | Should -Not -Exist
    }

    It 'pulls from a registry behind Basic auth with Docker config credentials, RegistryAuthFailed without' {
        function Set-DockerLogin([string] $Folder, [string] $Password) {
            $env:DOCKER_CONFIG = Join-Path $TestDrive $Folder
            New-Item -ItemType Directory -Force $env:DOCKER_CONFIG | Out-Null
            $auth = [Convert]::ToBase64String([Text.Encoding]::UTF8.GetBytes("tester:$Password"))
            @{ auths = @{ "127.0.0.1:$($registry.Port)" = @{ auth = $auth } } } | ConvertTo-Json -Depth 4 |
                Set-Content (Join-Path $env:DOCKER_CONFIG 'config.json')
        }

        $registry = Start-TestRegistry -User tester -Password 'pw-for-tests'
        $outerConfig = $env:DOCKER_CONFIG
        try {
            $private = "127.0.0.1:$($registry.Port)/private/busybox:1"
            # The push reads the same file, through the engine's client.
            Set-DockerLogin -Folder good -Password 'pw-for-tests'
            $pushed = Publish-TestImage -Reference $private -Marker private
            $blobs = Get-BlobCount

            $env:DOCKER_CONFIG = Join-Path $TestDrive 'no-config'
            $r = Invoke-Captured { Save-SandboxImage -Name $private }
            Get-ErrorId $r.Errors[0] | Should -Be 'RegistryAuthFailed'
            $r.Errors[0].TargetObject | Should -Be $private
            Set-DockerLogin -Folder wrong -Password 'not-the-password'
            $r = Invoke-Captured { Save-SandboxImage -Name $private }
            Get-ErrorId $r.Errors[0] | Should -Be 'RegistryAuthFailed'
            "$($r.Errors[0].Exception.Message)" | Should -BeLike "*user 'tester'*"
            Get-SandboxImage -Name $private -ErrorAction Ignore | Should -BeNullOrEmpty
            Get-BlobCount | Should -Be $blobs

            Set-DockerLogin -Folder good -Password 'pw-for-tests'
            $saved = Save-SandboxImage -Name $private -PassThru -ErrorAction Stop
            $saved.Digest | Should -Be $pushed.Manifest
            Remove-SandboxImage -Name $private -Confirm:$false -ErrorAction Stop
        }
        finally {
            $env:DOCKER_CONFIG = $outerConfig
            Stop-TestRegistry $registry
        }
    }

    It 'refuses to remove an image a sandbox uses with ImageInUse, unless -Force' -Tag VM {
        $null = New-Sandbox -Name imgc-user -Image $script:Image -WarningAction SilentlyContinue `
            -ErrorAction Stop
        $r = Invoke-Captured { Remove-SandboxImage -Name $script:Image -Confirm:$false }
        Get-ErrorId $r.Errors[0] | Should -Be 'ImageInUse'
        $r.Errors[0].TargetObject | Should -Be $script:Image
        "$($r.Errors[0].CategoryInfo.Category)" | Should -Be 'InvalidOperation'
        Get-SandboxImage -Name $script:Image | Should -Not -BeNullOrEmpty

        Remove-SandboxImage -Name $script:Image -Force -WarningVariable warned -WarningAction SilentlyContinue
        "$warned" | Should -BeLike "*imgc-user*"
        Get-SandboxImage | Should -BeNullOrEmpty
        Get-Sandbox -Name imgc-user | Should -Not -BeNullOrEmpty
    }
}
