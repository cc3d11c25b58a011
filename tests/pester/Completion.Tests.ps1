#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0' }
# Tab completion as a user gets it, through TabExpansion2, and the list view of a sandbox. A home
# of their own, so that completions list exactly the sandboxes and images these tests make: two
# small sandboxes with labels (real boots) and two images pulled from a loopback registry.

BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $env:MSB_TEST_MODULE_PATH = Import-MicrosandboxUnderTest
    $script:OuterHome = $env:MSB_HOME
    $env:MSB_HOME = Join-Path ([IO.Path]::GetTempPath()) "msb-completion-$PID"
    # The accelerator probe's answer is carried over, as the Test task does, so the boot is not probed again.
    $probe = if ($script:OuterHome) { Join-Path $script:OuterHome 'cache/accelerator.json' }
    if ($probe -and (Test-Path $probe)) {
        New-Item -ItemType Directory -Force "$env:MSB_HOME/cache" | Out-Null
        Copy-Item $probe "$env:MSB_HOME/cache"
    }

    # New-Sandbox -Image completes paths too: a folder of known files to complete them from.
    $script:Files = Join-Path ([IO.Path]::GetTempPath()) "msb-completion-files-$PID"
    New-Item -ItemType Directory -Force $script:Files | Out-Null
    Set-Content (Join-Path $script:Files 'disk.qcow2') 'not a disk'
    Push-Location $script:Files

    function Get-CompletionText {
        <# What Tab offers with the cursor at the end of the line, in order. #>
        param([string] $Line)
        $result = TabExpansion2 -inputScript $Line -cursorColumn $Line.Length
        @($result.CompletionMatches | ForEach-Object CompletionText)
    }
}

AfterAll {
    Pop-Location
    Get-Sandbox -ErrorAction Ignore | Remove-Sandbox -Force
    Remove-Item $script:Files -Recurse -Force -ErrorAction Ignore
    Remove-Item $env:MSB_HOME -Recurse -Force -ErrorAction Ignore
    $env:MSB_HOME = $script:OuterHome
}

Describe 'Completion of sandbox names and labels, and the list view' -Tag VM {
    BeforeAll {
        $script:QemuBefore = Get-QemuPid
        $null = New-Sandbox -Name alpha -MemoryMB 128 -WarningAction SilentlyContinue -ErrorAction Stop `
            -Label @{ app = 'web'; tier = 'front end'; owner = "o'brien" }, gpu
        $null = New-Sandbox -Name 'beta two' -MemoryMB 128 -WarningAction SilentlyContinue -ErrorAction Stop `
            -Label @{ app = 'api'; tier = 'back' } -Environment @{ GREETING = 'hello'; EMPTY = '' }
    }

    AfterAll {
        Get-Sandbox -ErrorAction Ignore | Remove-Sandbox -Force
    }

    It 'offers every label key and key=value pair, sorted, once each, quoted where needed' {
        Get-CompletionText 'Get-Sandbox -Label ' | Should -Be @(
            'app', 'app=api', 'app=web', 'gpu', 'owner', "'owner=o''brien'", 'tier', 'tier=back',
            "'tier=front end'")
    }

    It 'offers the keys that start with the word, case-blind, with their pairs' {
        Get-CompletionText 'Stop-Sandbox -Label t' | Should -Be @('tier', 'tier=back', "'tier=front end'")
        Get-CompletionText 'Stop-Sandbox -Label G' | Should -Be @('gpu')
    }

    It 'offers the values of the key before =' {
        Get-CompletionText 'Remove-Sandbox -Label tier=' | Should -Be @('tier=back', "'tier=front end'")
        Get-CompletionText 'Start-Sandbox -Label app=w' | Should -Be @('app=web')
        Get-CompletionText "Get-Sandbox -Label 'tier=fr" | Should -Be @("'tier=front end'")
        Get-CompletionText 'Get-Sandbox -Label nothing=' | Should -BeNullOrEmpty
    }

    It 'completes each term of a selector list' {
        Get-CompletionText 'Get-Sandbox -Label app=web, own' | Should -Be @('owner', "'owner=o''brien'")
    }

    It 'completes to text that selects the sandbox it came from' {
        $term = @(Get-CompletionText 'Get-Sandbox -Label owner=')[0]
        (Invoke-Expression "Get-Sandbox -Label $term").Name | Should -Be 'alpha'
        $term = @(Get-CompletionText 'Get-Sandbox -Label tier=f')[0]
        (Invoke-Expression "Get-Sandbox -Label $term").Name | Should -Be 'alpha'
    }

    It 'still completes names, quoting a name with a space' {
        Get-CompletionText 'Stop-Sandbox -Name b' | Should -Be @("'beta two'")
        Get-CompletionText 'Get-Sandbox al' | Should -Be @('alpha')
    }

    It 'shows everything in the list view, and keeps the table as the default' {
        $list = Get-Sandbox -Name alpha | Format-List | Out-String
        $s = Get-Sandbox -Name alpha
        foreach ($row in 'Id', 'State', 'Reason', 'Image', 'Cpus', 'MemoryMB', 'Environment',
            'WorkingDirectory', 'User', 'Shell', 'CreatedAt', 'StartedAt', 'MaxDuration', 'IdleTimeout',
            'AttachedProcessId', 'Accelerator', 'Host', 'Directory') {
            $list | Should -Match "(?m)^$row +:"
        }
        $list | Should -Match "(?m)^Labels +: app=web, gpu=, owner=o'brien, tier=front end\s*$"
        $list | Should -Match "(?m)^RuntimePid +: $($s.RuntimePid)\s*$"
        $list | Should -Match '(?m)^Age +: \d\d:\d\d:\d\d\s*$'
        $list | Should -Match "(?m)^Directory +: $([regex]::Escape($s.Directory))\s*$"
        Get-Sandbox -Name 'beta two' | Format-List | Out-String |
            Should -Match '(?m)^Environment +: EMPTY=, GREETING=hello\s*$'

        $table = Get-Sandbox | Out-String -Width 250
        $table | Should -Match '(?m)^Name +State +Image +Cpus +MemoryMB +Labels +Age\s*$'
        $table | Should -Match "(?m)^alpha +Running +\S+ +1 +128 +app=web,gpu=,owner=o'brien,tier=front end +\d+[smhd]\s*$"
        $table | Should -Match '(?m)^beta two +Running +\S+ +1 +128 +app=api,tier=back +\d+[smhd]\s*$'
        $table | Should -Not -Match 'RuntimePid'
    }

    It 'leaves no QEMU process of its own once the sandboxes are removed' {
        Get-Sandbox | Remove-Sandbox -Force
        Get-QemuPid | Where-Object { $_ -notin $script:QemuBefore } | Should -BeNullOrEmpty
    }
}

Describe 'Completion of image references' -Tag Images {
    BeforeAll {
        $registry = Start-TestRegistry
        try {
            $script:Registry = "127.0.0.1:$($registry.Port)"
            $script:Busybox = "$script:Registry/busybox:completion"
            $script:Python = "$script:Registry/python:latest"
            foreach ($reference in $script:Busybox, $script:Python) {
                $null = Publish-TestImage -Reference $reference -Marker completion
                $null = Save-SandboxImage -Name $reference -ErrorAction Stop
            }
        }
        finally {
            # The images stay in the cache: completion never asks a registry.
            Stop-TestRegistry $registry
        }
    }

    It 'offers the cached references, sorted, to the image cmdlets' {
        @(Get-SandboxImage).Reference | Sort-Object | Should -Be @($script:Busybox, $script:Python)
        Get-CompletionText 'Get-SandboxImage ' | Should -Be @($script:Busybox, $script:Python)
        Get-CompletionText 'Get-SandboxImage 127.0.0.1:' | Should -Be @($script:Busybox, $script:Python)
        Get-CompletionText "Remove-SandboxImage -Name $script:Registry/p" | Should -Be @($script:Python)
    }

    It 'matches the short form after the registry host, and completes to the full reference' {
        Get-CompletionText 'Get-SandboxImage py' | Should -Be @($script:Python)
        Get-CompletionText 'Save-SandboxImage -Name BUSY' | Should -Be @($script:Busybox)
        Get-CompletionText 'Remove-SandboxImage -Reference python:l' | Should -Be @($script:Python)
        Get-CompletionText 'Get-SandboxImage alpine' | Should -BeNullOrEmpty
    }

    It 'offers New-Sandbox -Image the cached images, the built-in image and paths' {
        Get-CompletionText 'New-Sandbox -Image py' | Should -Be @($script:Python)
        Get-CompletionText 'New-Sandbox -Image d' | Should -Be @('default', './disk.qcow2')
        Get-CompletionText 'New-Sandbox -Image ./di' | Should -Be @('./disk.qcow2')
    }
}

Describe 'Completion when the home cannot be read' {
    It 'offers nothing, and throws nothing' {
        $saved = $env:MSB_HOME
        $env:MSB_HOME = Join-Path $script:Files 'disk.qcow2'
        try {
            foreach ($completer in [Microsandbox.PowerShell.SandboxLabelCompleter],
                [Microsandbox.PowerShell.SandboxImageCompleter],
                [Microsandbox.PowerShell.SandboxNameCompleter]) {
                $completer::new().CompleteArgument('Get-Sandbox', 'Label', '', $null, @{}) |
                    Should -BeNullOrEmpty
            }
            Get-CompletionText 'Get-Sandbox -Label ' | Should -BeNullOrEmpty
        }
        finally {
            $env:MSB_HOME = $saved
        }
    }
}
