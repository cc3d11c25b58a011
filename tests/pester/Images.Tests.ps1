#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0' }
# OCI images from a real registry (Debian's docker-registry) on loopback: the built-in image's
# layer is pushed with a config of its own, then booted as any image would be.

BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $env:MSB_TEST_MODULE_PATH = Import-MicrosandboxUnderTest

    $script:Registry = Start-TestRegistry
    $script:Port = $script:Registry.Port
    $null = Publish-TestImage -Reference "127.0.0.1:$script:Port/busybox:test"
    $script:Image = "127.0.0.1:$script:Port/busybox:test"
    # An image whose layer matches its digest but climbs out of the root.
    $script:EscapeTar = Join-Path ([IO.Path]::GetTempPath()) "msb-escape-layer-$PID.tar"
    New-LayerTar -Path $script:EscapeTar -Entry @{ Name = 'fine' }, @{ Name = '../evil' }
    $null = Publish-TestImage -Reference "127.0.0.1:$script:Port/escape:1" -LayerPath $script:EscapeTar
    # A reused home may hold bases of earlier runs; only those built here count as extra.
    $script:EarlierBases = @(Get-ChildItem (Join-Path $env:MSB_HOME 'cache/images') -Filter '*.erofs' `
        -ErrorAction Ignore | ForEach-Object Name)
}

AfterAll {
    Get-Sandbox -Name 'img-*' -ErrorAction Ignore | Remove-Sandbox -Force
    Stop-TestRegistry $script:Registry
    Remove-Item $script:EscapeTar -ErrorAction Ignore
}

Describe 'Sandboxes from OCI images' -Tag VM {
    It 'pulls an image from a registry and applies its config, user settings winning' {
        $s = New-Sandbox -Name img-one -Image $script:Image -Label tier=user -Environment @{ SHARED = 'user' } `
            -WarningAction SilentlyContinue -ErrorAction Stop
        $s.Image | Should -Be $script:Image
        $s.Labels['org.example.team'] | Should -Be 'images'
        $s.Labels['tier'] | Should -Be 'user'
        $s.Labels.ContainsKey('sandbox.owner') | Should -BeFalse
        Invoke-SandboxCommand -Name img-one -Command 'echo "$FROM_IMAGE $SHARED"; pwd' | Should -Be @('yes user', '/tmp')
    }

    It 'shares one cached base among sandboxes of the image, and works offline with -PullPolicy Never' {
        $null = New-Sandbox -Name img-two -Image $script:Image -PullPolicy Never -WarningAction SilentlyContinue `
            -ErrorAction Stop
        Invoke-SandboxCommand -Name img-two -Command 'echo $FROM_IMAGE' | Should -Be 'yes'
        $base = (Get-SandboxImage -Name $script:Image).BasePath
        $base | Should -Exist
        $others = @(Get-ChildItem (Join-Path $env:MSB_HOME 'cache/images') -Filter '*.erofs' |
            Where-Object { $_.Name -notlike 'default-*' -and $_.Name -notin $script:EarlierBases } |
            Where-Object FullName -NE $base)
        $others | Should -BeNullOrEmpty
    }

    It 'keeps a file written in one sandbox of the image out of the other, and across Stop-/Start-Sandbox' {
        # img-one and img-two, both running, share one base; each writes to its own upper disk.
        Invoke-SandboxCommand -Name img-one -Command 'echo only-one > /etc/written-by-one; sync' -ErrorAction Stop
        Invoke-SandboxCommand -Name img-two -Command 'test -e /etc/written-by-one && echo seen || echo unseen' |
            Should -Be 'unseen'

        Stop-Sandbox -Name img-one -ErrorAction Stop
        Start-Sandbox -Name img-one -WarningAction SilentlyContinue -ErrorAction Stop
        Invoke-SandboxCommand -Name img-one -Command 'cat /etc/written-by-one' | Should -Be 'only-one'
        Invoke-SandboxCommand -Name img-two -Command 'test -e /etc/written-by-one && echo seen || echo unseen' |
            Should -Be 'unseen'
    }

    It 'shows pull progress per layer while New-Sandbox pulls, every bar completed' {
        # Progress cannot be redirected, so the cmdlet runs in a PowerShell of its own to read it.
        $ps = [powershell]::Create()
        try {
            $null = $ps.AddCommand('Import-Module').AddParameter('Name', $env:MSB_TEST_MODULE_PATH)
            $null = $ps.AddStatement().AddCommand('New-Sandbox').AddParameter('Name', 'img-progress')
            $null = $ps.AddParameter('Image', $script:Image).AddParameter('PullPolicy', 'Always')
            $null = $ps.AddParameter('WarningAction', 'SilentlyContinue')
            $created = $ps.Invoke()
            $ps.Streams.Error | Should -BeNullOrEmpty
            $progress = @($ps.Streams.Progress)
        }
        finally {
            $ps.Dispose()
        }

        $created[0].State | Should -Be 'Running'
        @($progress | Where-Object Activity -Like 'Layer sha256:*') | Should -Not -BeNullOrEmpty
        foreach ($id in $progress.ActivityId | Sort-Object -Unique) {
            ($progress | Where-Object ActivityId -EQ $id)[-1].RecordType | Should -Be Completed
        }
        Remove-Sandbox -Name img-progress -Force
    }

    It 'boots a host folder as the root, copy-on-write, leaving the folder untouched' {
        $folder = Join-Path ([IO.Path]::GetTempPath()) "msb-hostroot-$PID"
        New-Item -ItemType Directory -Force $folder | Out-Null
        try {
            $guest = Join-Path (Split-Path $env:MSB_TEST_MODULE_PATH) 'guest'
            & tar -xf (Join-Path $guest 'rootfs.tar') -C $folder
            Set-Content (Join-Path $folder 'marker') 'from-host'
            $s = New-Sandbox -Name img-folder -Image $folder -WarningAction SilentlyContinue -ErrorAction Stop
            $s.Image | Should -Be $folder
            Invoke-SandboxCommand -Name img-folder -Command 'cat /marker; echo new > /written; cat /written' |
                Should -Be @('from-host', 'new')
            Test-Path (Join-Path $folder 'written') | Should -BeFalse
            # Shared, not copied: a file the host adds while the sandbox runs is there in the guest.
            Set-Content (Join-Path $folder 'late') 'added-after-boot'
            Invoke-SandboxCommand -Name img-folder -Command 'cat /late' | Should -Be 'added-after-boot'
            Remove-Sandbox -Name img-folder -Force
        }
        finally {
            Remove-Item $folder -Recurse -Force -ErrorAction Ignore
        }
    }

    It 'rejects <Case> with <Id>, creating nothing' -ForEach @(
        @{ Case = 'an unknown tag'; Image = { "127.0.0.1:$script:Port/busybox:nosuchtag" }; Id = 'ImageNotFound' }
        @{ Case = 'an uncached image under -PullPolicy Never'; Image = { "127.0.0.1:$script:Port/other:1" }
            Id = 'ImageNotFound'; Never = $true }
        @{ Case = 'an unreachable registry'; Image = { '127.0.0.1:9/busybox:test' }; Id = 'RegistryUnreachable' }
        @{ Case = 'a malformed reference'; Image = { 'Bad Name!!' }; Id = 'InvalidImageReference' }
        @{ Case = 'a root folder that does not exist'; Image = { '/no/such/root/folder' }; Id = 'ImagePathNotFound' }
        @{ Case = 'a layer escaping the root'; Image = { "127.0.0.1:$script:Port/escape:1" }; Id = 'LayerPathEscapes' }
    ) {
        $name = "img-bad-$([guid]::NewGuid().ToString('N').Substring(0, 6))"
        $params = @{ Name = $name; Image = (& $Image) }
        if ($Never) { $params.PullPolicy = 'Never' }
        $r = Invoke-Captured { New-Sandbox @params -WarningAction SilentlyContinue }
        Get-ErrorId $r.Errors[0] | Should -Be $Id
        $r.Errors[0].TargetObject | Should -Not -BeNullOrEmpty
        Get-Sandbox | Where-Object Name -EQ $name | Should -BeNullOrEmpty
        Get-SandboxImage -Name $params.Image -ErrorAction Ignore | Should -BeNullOrEmpty
        Get-ChildItem (Join-Path $env:MSB_HOME 'cache/incoming') -Filter '*.tmp*' -ErrorAction Ignore |
            Should -BeNullOrEmpty
    }
}
